"""Runs the Toxiproxy-compatible server: optional populate from a config file, the HTTP API, and a
port file written once the API is bound (so that launchers can ask for port 0 without racing)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from meridian_common.logging_setup import event
from regions.toxiproxy import api_json
from regions.toxiproxy.api import build_app
from regions.toxiproxy.api_error import ApiError
from regions.toxiproxy.proxy_collection import ProxyCollection

log = logging.getLogger(__name__)


async def populate_from_file(collection: ProxyCollection, config_path: Path) -> None:
    """Like Toxiproxy's -config: errors are logged and the server starts anyway."""
    try:
        raw = await asyncio.to_thread(config_path.read_bytes)
        configs = api_json.parse_populate(api_json.parse_body(raw))
    except OSError as error:
        log.error(event("toxiproxy.config_unreadable", config=config_path, error=error))
        return
    except ApiError as error:
        log.error(event("toxiproxy.config_invalid", config=config_path, error=error.message))
        return
    proxies, error = await collection.populate(configs)
    if error is not None:
        log.error(event("toxiproxy.config_populate_failed", config=config_path, error=error.message))
    log.info(event("toxiproxy.config_populated", config=config_path, proxies=len(proxies)))


def write_port_file(path: Path, port: int) -> None:
    # Written whole then renamed: a reader polling the file never sees a partial number.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def serve(host: str, port: int, *, port_file: Path | None = None, config_path: Path | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serves until `stop` is set (or SIGTERM/SIGINT when no event is given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us through the event
    collection = ProxyCollection()
    if config_path is not None:
        await populate_from_file(collection, config_path)
    runner = web.AppRunner(build_app(collection), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        log.info(event("toxiproxy.api_listening", host=host, port=bound_port))
        if port_file is not None:
            await asyncio.to_thread(write_port_file, port_file, bound_port)
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info(event("toxiproxy.stopped"))
