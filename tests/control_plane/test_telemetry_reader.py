"""The telemetry reader: the sample window (pure), and reading the regions' streams from a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
import redis.asyncio as redis_asyncio

from control_plane.telemetry.reader import SampleWindow, TelemetryReader
from meridian_common.service_process import LOOPBACK, pick_free_port
from meridian_common.telemetry_stream import stream_key
from meridian_proto import telemetry_pb2
from regions.local_services import RunningService


def run(scenario: Coroutine[Any, Any, None], timeout_s: float = 15.0) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout_s))


def sample(end_ms: int, deployment: str = "a", region: str = "test") -> telemetry_pb2.TelemetrySample:
    return telemetry_pb2.TelemetrySample(router_id="r1", region=region, model="m", deployment=deployment,
                                         window_start_unix_ms=end_ms - 500, window_end_unix_ms=end_ms, requests=1)


def batch(*samples: telemetry_pb2.TelemetrySample) -> dict[bytes, bytes]:
    return {b"batch": telemetry_pb2.TelemetryBatch(samples=samples).SerializeToString()}


# --- the window, pure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("end_ms", "kept"),
    [
        (100_000, True),
        (90_000, True),  # exactly window_s old
        (89_999, False),
        (0, False),
        (105_000, True),  # a little ahead: clocks differ
        (110_001, False),  # further ahead than the window: would never age out
    ],
)
def test_the_window_keeps_samples_that_ended_within_window_s(end_ms: int, kept: bool) -> None:
    window = SampleWindow(10.0)
    window.add([sample(end_ms)])
    assert (window.current(100_000) == [sample(end_ms)]) is kept
    assert len(window) == (1 if kept else 0)


def test_the_window_forgets_samples_as_time_passes_and_stays_bounded() -> None:
    window = SampleWindow(1.0, max_samples=3)
    window.add([sample(1_000, "a"), sample(1_500, "b")])
    assert [s.deployment for s in window.current(2_000)] == ["a", "b"]
    assert [s.deployment for s in window.current(2_200)] == ["b"]
    window.add([sample(2_300, d) for d in "cdef"])
    assert [s.deployment for s in window.current(2_300)] == ["d", "e", "f"]
    assert window.overflowed == 2


def test_the_window_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="window_s"):
        SampleWindow(0)


# --- against a real Redis -----------------------------------------------------------------------------------

def test_one_poll_reads_every_region_and_only_new_entries(redis_server: RunningService) -> None:
    east, west = f"e{uuid.uuid4().hex[:8]}", f"w{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        client = redis_asyncio.Redis.from_url(redis_server.url)
        reader = TelemetryReader(redis_server.url, [east, west, east], window_s=10)
        try:
            now = int(time.time() * 1000)
            # An entry from before the window (explicit id) is not read by a new reader.
            await client.xadd(stream_key(east), batch(sample(now - 60_000, "old")), id=f"{now - 60_000}-0")
            await client.xadd(stream_key(east), batch(sample(now, "e1"), sample(now, "e2")))
            await client.xadd(stream_key(west), batch(sample(now, "w1", region=west)))
            assert sorted(s.deployment for s in await reader.poll(now)) == ["e1", "e2", "w1"]
            assert reader.connected and reader.streams == [stream_key(east), stream_key(west)]

            # the next poll returns the same window, plus only what is new
            await client.xadd(stream_key(west), batch(sample(now + 100, "w2", region=west)))
            assert sorted(s.deployment for s in await reader.poll(now + 100)) == ["e1", "e2", "w1", "w2"]
            assert sorted(s.deployment for s in await reader.poll(now + 200)) == ["e1", "e2", "w1", "w2"]
            # and forgets what has aged out
            assert await reader.poll(now + 10_101) == []
        finally:
            await reader.close()
            await client.aclose()

    run(scenario())


def test_a_backlog_is_read_in_bounded_polls(redis_server: RunningService) -> None:
    region = f"b{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        client = redis_asyncio.Redis.from_url(redis_server.url)
        reader = TelemetryReader(redis_server.url, [region], max_entries_per_stream=10)
        try:
            now = int(time.time() * 1000)
            pipeline = client.pipeline(transaction=False)
            for index in range(25):
                pipeline.xadd(stream_key(region), batch(sample(now, f"d{index}")))
            await pipeline.execute()
            sizes = [len(await reader.poll(now)) for _ in range(4)]
            assert sizes == [10, 20, 25, 25]
        finally:
            await reader.close()
            await client.aclose()

    run(scenario())


def test_corrupt_and_foreign_entries_are_skipped(redis_server: RunningService,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    region = f"c{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        client = redis_asyncio.Redis.from_url(redis_server.url)
        reader = TelemetryReader(redis_server.url, [region])
        try:
            now = int(time.time() * 1000)
            key = stream_key(region)
            await client.xadd(key, {b"something": b"else"})
            await client.xadd(key, {b"batch": b"\xff\xff\xff\xff not protobuf"})
            await client.xadd(key, batch(sample(now, "good")))
            await client.xadd(key, {b"batch": b"\x0a\x05trunc"})
            assert [s.deployment for s in await reader.poll(now)] == ["good"]
            assert reader.skipped_entries == 3
        finally:
            await reader.close()
            await client.aclose()

    with caplog.at_level("WARNING", logger="control_plane.telemetry.reader"):
        run(scenario())
    skipped_lines = [r.getMessage() for r in caplog.records if "telemetry_entries_skipped" in r.getMessage()]
    assert len(skipped_lines) == 1, skipped_lines
    assert "no_batch_field=1" in skipped_lines[0] and "not_a_telemetry_batch=2" in skipped_lines[0]


def test_a_poll_without_redis_returns_the_window_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        reader = TelemetryReader(f"redis://:hunter2@{LOOPBACK}:{pick_free_port()}/0", ["x"], window_s=5)
        try:
            reader.window.add([sample(1_000)])
            for _ in range(3):
                started = time.monotonic()
                assert await reader.poll(2_000) == [sample(1_000)]
                assert time.monotonic() - started < 1.5
            assert not reader.connected
        finally:
            await reader.close()

    with caplog.at_level("INFO", logger="control_plane.telemetry.reader"):
        run(scenario())
    messages = [r.getMessage() for r in caplog.records]
    assert sum("telemetry_reader_unreachable" in m for m in messages) == 1
    assert not any("hunter2" in m for m in messages)
