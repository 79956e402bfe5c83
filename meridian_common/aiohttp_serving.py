"""Runs an aiohttp application until cancelled and announces the port it bound (see service_process)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
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


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Binds before the application starts, so start-up code already knows the port (port 0 = any).
    `reuse_port` (SO_REUSEPORT) lets several processes bind the same port, each listening, and the kernel
    spread new connections over them; every socket on the port must set it (see meridian_common.worker_pool)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_until_cancelled(
    app: web.Application,
    host: str,
    port: int,
    *,
    port_file: Path | None = None,
    name: str = "server",
    handler_cancellation: bool = False,
    shutdown_timeout_s: float = 60.0,
    on_bound: Callable[[int], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Runs until cancelled. `on_bound(port)` runs before the application's start-up hooks;
    `shutdown_timeout_s` bounds how long open requests (streams) may delay exit; `reuse_port`: see
    bind_socket."""
    sock = bind_socket(host, port, reuse_port=reuse_port)
    bound = sock.getsockname()[1]
    if on_bound is not None:
        on_bound(bound)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None,
                           shutdown_timeout=shutdown_timeout_s)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        log.info(event("listening", server=name, url=f"http://{host}:{bound}"))
        announce_port(port_file, bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        sock.close()
