"""The stall timeout from a deployment's TPOT within its floor and cap, and the watch that fails a read that
waits past it, on a real aiohttp StreamReader."""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import aiohttp
import pytest

from data_plane.config import StreamStallConfig
from data_plane.serving.stream_stall import StallWatch, StreamStalled, stall_timeout_s

CONFIG = StreamStallConfig(tpot_multiple=50, floor_s=2.0, cap_s=15.0)


@pytest.mark.parametrize(("tpot_ms", "expected_s"), [
    (None, 15.0), (0.0, 15.0), (10.0, 2.0), (100.0, 5.0), (1000.0, 15.0),
])
def test_stall_timeout_follows_the_tpot_within_floor_and_cap(tpot_ms: float | None, expected_s: float) -> None:
    assert stall_timeout_s(tpot_ms, CONFIG) == expected_s


def _reader() -> aiohttp.StreamReader:
    return aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())


def test_a_silent_stream_fails_its_read_after_the_timeout() -> None:
    async def run() -> float:
        reader = _reader()
        watch = StallWatch(reader, 0.2)
        started = time.monotonic()
        with pytest.raises(StreamStalled):
            await asyncio.wait_for(reader.readany(), timeout=5)
        watch.stop()
        return time.monotonic() - started

    waited = asyncio.run(run())
    assert 0.2 <= waited < 0.6


def test_bytes_keep_the_watch_quiet() -> None:
    async def run() -> None:
        reader = _reader()
        watch = StallWatch(reader, 0.2)
        for _ in range(8):  # 0.4 s of a byte every 50 ms: never 0.2 s without one
            await asyncio.sleep(0.05)
            reader.feed_data(b"x")
            assert await reader.readany() == b"x"
        watch.stop()

    asyncio.run(run())
