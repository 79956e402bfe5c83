"""Runs an aiohttp application until cancelled and announces the port it bound (see service_process)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from meridian_common.logging_setup import event

log = logging.getLogger(__name__)


def announce_port(port_file: Path | None, port: int) -> None:
    """Writes the bound port atomically, so a launcher never reads a half-written number."""
    if port_file is None:
        return
    partial = port_file.with_suffix(port_file.suffix + ".tmp")
    partial.write_text(str(port))
    partial.replace(port_file)


async def serve_until_cancelled(
    app: web.Application,
    host: str,
    port: int,
    *,
    port_file: Path | None = None,
    name: str = "server",
    handler_cancellation: bool = False,
    shutdown_timeout_s: float = 60.0,
) -> None:
    """Runs until cancelled. `shutdown_timeout_s` bounds how long open requests (streams) may delay exit."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None,
                           shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1]
        log.info(event("listening", server=name, url=f"http://{host}:{bound}"))
        announce_port(port_file, bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
