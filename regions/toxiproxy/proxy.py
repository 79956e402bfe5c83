"""A proxy: a TCP listener on `listen` that opens a Connection to `upstream` for each client.

Disabling it closes the listener and every open connection; enabling listens again on the same
address (the actual port once bound, so a proxy created on port 0 keeps its port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket

from meridian_common.logging_setup import event
from regions.toxiproxy.addresses import is_ip_literal, join_host_port, listen_target, split_host_port
from regions.toxiproxy.api_error import ApiError
from regions.toxiproxy.api_json import ProxyInput
from regions.toxiproxy.connection import Connection
from regions.toxiproxy.toxic_collection import ToxicCollection

log = logging.getLogger(__name__)

UPSTREAM_CONNECT_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


async def _resolve(host: str, port: int) -> str:
    """Go's choice for a host name: its first IPv4 address if it has one."""
    if is_ip_literal(host):
        return host
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"lookup {host}: no such host")
    return str(next((info for info in infos if info[0] == socket.AF_INET), infos[0])[4][0])


def _os_text(error: OSError) -> str:
    # Go's syscall errors are the C library's texts with a lower-case first letter.
    if isinstance(error, socket.gaierror) and error.errno == socket.EAI_NONAME:
        return "no such host"
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


async def normalize_listen(listen: str) -> str:
    """The listen address as Go's ResolveTCPAddr prints it, to compare with a bound proxy's; errors are 500s
    worded as Go's, which Toxiproxy answers with as they are."""
    try:
        host, port = split_host_port(listen)
        return join_host_port(await _resolve(host, port), port) if host else f":{port}"
    except ValueError as error:
        raise ApiError(str(error), 500) from error
    except OSError as error:
        raise ApiError(f"lookup {host}: {_os_text(error)}", 500) from error


async def _bind(listen: str) -> socket.socket:
    """A bound socket for `listen`, or a 500 worded as Go's net.Listen error."""
    try:
        host, port = split_host_port(listen)
    except ValueError as error:
        raise ApiError(f"listen tcp: {error}", 500) from error
    try:
        ip = await _resolve(host, port) if host else ""
    except OSError as error:
        raise ApiError(f"listen tcp: lookup {host}: {_os_text(error)}", 500) from error
    family, address, dual_stack = listen_target(ip, socket.has_ipv6)
    where = join_host_port(ip, port)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise ApiError(f"listen tcp {where}: socket: {_os_text(error)}", 500) from error
    step = "setsockopt"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        step = "bind"
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException as error:
        sock.close()
        if isinstance(error, OSError):
            raise ApiError(f"listen tcp {where}: {step}: {_os_text(error)}", 500) from error
        raise
    return sock


class Proxy:
    def __init__(self, config: ProxyInput, rng: random.Random) -> None:
        self.name = config.name
        self.listen = config.listen
        self.upstream = config.upstream
        self.enabled = False
        self.toxics = ToxicCollection()
        self._rng = rng
        self._server: asyncio.Server | None = None
        self._generation = 0
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def config(self) -> ProxyInput:
        return ProxyInput(name=self.name, listen=self.listen, upstream=self.upstream, enabled=self.enabled)

    async def start(self) -> None:
        """Listens; a failure (bad address, port in use) is a 500, as in Toxiproxy, and leaves it disabled."""
        if self.enabled:
            return
        sock = await _bind(self.listen)
        try:
            self._server = await asyncio.start_server(self._accept, sock=sock)
        except OSError as error:
            sock.close()
            raise ApiError(f"listen tcp {self.listen}: listen: {_os_text(error)}", 500) from error
        host, port = sock.getsockname()[:2]
        self.listen = join_host_port(host, port)
        self.enabled = True
        log.info(event("toxiproxy.proxy_started", proxy=self.name, listen=self.listen, upstream=self.upstream))

    async def stop(self) -> None:
        if not self.enabled or self._server is None:
            return
        self.enabled = False
        self._generation += 1
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._server.wait_closed()
        self._server = None
        log.info(event("toxiproxy.proxy_stopped", proxy=self.name, listen=self.listen))

    async def differs(self, other: ProxyInput) -> bool:
        return await normalize_listen(other.listen) != self.listen or other.upstream != self.upstream

    async def update(self, new: ProxyInput) -> None:
        """Toxiproxy's Update: a new listen or upstream restarts the proxy, then `enabled` is applied."""
        if await self.differs(new):
            await self.stop()
            self.listen = new.listen
            self.upstream = new.upstream
        if new.enabled and not self.enabled:
            await self.start()
        elif not new.enabled:
            await self.stop()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # The work runs in a task of our own: stop() cancels it, and cancelling asyncio's handler task
        # itself makes Python 3.11 log a spurious error.
        task = asyncio.create_task(self._serve_client(client_reader, client_writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.wait([task])
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(event("toxiproxy.connection_failed", proxy=self.name, error=repr(error)), exc_info=error)

    async def _serve_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        generation = self._generation
        peer = client_writer.get_extra_info("peername")
        try:
            host, port = split_host_port(self.upstream)
            async with asyncio.timeout(UPSTREAM_CONNECT_TIMEOUT_S):
                upstream = await asyncio.open_connection(host, port)
        except (OSError, ValueError, TimeoutError) as error:
            log.warning(event("toxiproxy.upstream_unreachable", proxy=self.name, upstream=self.upstream,
                              client=peer, error=error))
            client_writer.close()
            return
        connection = Connection(proxy_name=self.name, client=(client_reader, client_writer), upstream=upstream,
                                toxics=self.toxics, rng=random.Random(self._rng.getrandbits(64)))
        if generation != self._generation:
            connection.abort()  # disabled while we were dialling
            return
        self._connections.add(connection)
        log.debug(event("toxiproxy.client_accepted", proxy=self.name, client=peer))
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
