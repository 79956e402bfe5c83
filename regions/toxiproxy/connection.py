"""One client connection through a proxy: two links (client->upstream, upstream->client) and the two sockets.

Like Toxiproxy, when one direction ends its destination socket is closed outright (no half-close), which
ends the other direction in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct

from meridian_common.logging_setup import event
from regions.toxiproxy.link import Link
from regions.toxiproxy.toxic_collection import ToxicCollection

log = logging.getLogger(__name__)

CLOSE_FLUSH_TIMEOUT_S = 5.0


class Connection:
    def __init__(
        self,
        *,
        proxy_name: str,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        toxics: ToxicCollection,
        rng: random.Random,
    ) -> None:
        self._proxy_name = proxy_name
        self._client_reader, self._client_writer = client
        self._upstream_reader, self._upstream_writer = upstream
        self._toxics = toxics
        self._rng = rng

    async def run(self) -> None:
        upstream_link = Link(direction="upstream", source=self._client_reader, dest=self._upstream_writer,
                             toxics=self._toxics, rng=self._rng,
                             close_dest=lambda reset: self._close(self._upstream_writer, reset))
        downstream_link = Link(direction="downstream", source=self._upstream_reader, dest=self._client_writer,
                               toxics=self._toxics, rng=self._rng,
                               close_dest=lambda reset: self._close(self._client_writer, reset))
        try:
            await asyncio.gather(upstream_link.run(), downstream_link.run())
        finally:
            self.abort()

    def abort(self) -> None:
        self._client_writer.transport.abort()
        self._upstream_writer.transport.abort()

    async def _close(self, writer: asyncio.StreamWriter, reset: bool) -> None:
        if reset:
            log.info(event("toxiproxy.connection_reset", proxy=self._proxy_name))
            for peer in (self._client_writer, self._upstream_writer):
                sock = peer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        # Linger on with a zero timeout: close() discards unsent data and sends RST.
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        writer.close()
        try:
            async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
                await writer.wait_closed()
        except (TimeoutError, OSError):
            writer.transport.abort()
