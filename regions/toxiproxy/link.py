"""One direction of one proxied connection: reads the source, runs each chunk through the proxy's
current toxics, writes the destination.

Toxiproxy rebuilds a goroutine chain when toxics change; here one pump re-reads the toxic list before
every chunk and runs the chunk through the toxics in order, while a separate reader keeps reading (and
time-stamping) so that latency counts from when data arrived. A toxic holding a chunk is woken when it
is removed or updated and forwards the chunk, so no byte is lost or reordered.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

from regions.toxiproxy.toxic_collection import ToxicCollection, ToxicEntry
from regions.toxiproxy.toxicity import draw_active
from regions.toxiproxy.toxics import Chunk, StreamClosed

READ_SIZE = 32 * 1024
# Toxiproxy's latency toxic buffers 1024 chunks; reading ahead that far keeps time stamps honest.
MAX_BUFFERED_CHUNKS = 1024


class LinkStub:
    """A toxic's per-connection, per-direction state: toxicity draw, start time, the toxic's own state."""

    __slots__ = ("_link", "active", "entry", "rng", "started_at", "state")

    def __init__(self, entry: ToxicEntry, link: Link) -> None:
        self._link = link
        self.rng = link.rng
        self.entry = entry
        self.active = draw_active(entry.spec.toxicity, link.rng)
        self.started_at = link.now()
        self.state: Any = entry.spec.toxic.new_state()

    def refresh(self, entry: ToxicEntry) -> None:
        if entry.revision != self.entry.revision:
            # An updated toxic restarts (Toxiproxy re-runs its stub): new draw and clock, same state.
            self.entry = entry
            self.active = draw_active(entry.spec.toxicity, self.rng)
            self.started_at = self._link.now()

    def now(self) -> float:
        return self._link.now()

    async def sleep(self, seconds: float) -> bool:
        if seconds <= 0:
            return True
        end = self.now() + seconds
        changed = self._link.toxics_changed
        while True:
            changed.clear()
            if not self._link.toxics.is_current(self.entry.uid, self.entry.revision):
                return False
            if self.now() >= end:
                return True
            try:
                async with asyncio.timeout_at(None if math.isinf(end) else end):
                    await changed.wait()
            except TimeoutError:
                return True

    async def sleep_uninterrupted(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


class Link:
    def __init__(
        self,
        *,
        direction: str,
        source: asyncio.StreamReader,
        dest: asyncio.StreamWriter,
        toxics: ToxicCollection,
        rng: random.Random,
        close_dest: Callable[[bool], Awaitable[None]],
    ) -> None:
        self.direction = direction
        self.toxics = toxics
        self.rng = rng
        self.toxics_changed = asyncio.Event()
        self._source = source
        self._dest = dest
        self._close_dest = close_dest
        self._loop = asyncio.get_running_loop()
        self._buffer: collections.deque[Chunk] = collections.deque()
        self._eof = False
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._stubs: dict[int, LinkStub] = {}

    def now(self) -> float:
        return self._loop.time()

    async def run(self) -> None:
        unsubscribe = self.toxics.subscribe(self._on_toxics_changed)
        reader = asyncio.create_task(self._read())
        try:
            await self._pump()
        finally:
            unsubscribe()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _on_toxics_changed(self) -> None:
        self.toxics_changed.set()
        self._wake.set()

    async def _read(self) -> None:
        try:
            while True:
                data = await self._source.read(READ_SIZE)
                if not data:
                    break
                while len(self._buffer) >= MAX_BUFFERED_CHUNKS:
                    self._space.clear()
                    await self._space.wait()
                self._buffer.append(Chunk(data, self.now()))
                self._wake.set()
        except OSError:
            pass  # the source went away: same as its end
        finally:
            self._eof = True
            self._wake.set()

    async def _pump(self) -> None:
        reset = False
        try:
            while True:
                self._wake.clear()
                chain = self._sync_chain()
                deadline = min((d for stub in chain if stub.active
                                if (d := stub.entry.spec.toxic.close_deadline(stub)) is not None), default=None)
                if deadline is not None and deadline <= self.now():
                    raise StreamClosed()
                if self._buffer:
                    chunk = self._buffer.popleft()
                    self._space.set()
                    await self._through(chunk, chain, 0)
                    continue
                if self._eof:
                    for stub in chain:
                        if stub.active:
                            await stub.entry.spec.toxic.on_eof(stub)
                    raise StreamClosed()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        except StreamClosed as closed:
            reset = closed.reset
        except OSError:
            pass  # the destination went away
        await self._close_dest(reset)

    def _sync_chain(self) -> list[LinkStub]:
        entries = self.toxics.entries(self.direction)
        current = {entry.uid for entry in entries}
        for uid in [uid for uid in self._stubs if uid not in current]:
            removed = self._stubs.pop(uid)
            if removed.entry.spec.toxic.closes_on_removal:
                raise StreamClosed()
        chain = []
        for entry in entries:
            stub = self._stubs.get(entry.uid)
            if stub is None:
                stub = self._stubs[entry.uid] = LinkStub(entry, self)
            else:
                stub.refresh(entry)
            chain.append(stub)
        return chain

    async def _through(self, chunk: Chunk, chain: list[LinkStub], index: int) -> None:
        while index < len(chain) and not chain[index].active:
            index += 1
        if index == len(chain):
            self._dest.write(chunk.data)
            await self._dest.drain()
            return
        stub = chain[index]
        await stub.entry.spec.toxic.pipe(chunk, stub, functools.partial(self._through, chain=chain, index=index + 1))
