"""The telemetry publisher: its bounded buffer (pure), and against a real Redis that is killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st

from control_plane.telemetry.reader import TelemetryReader
from data_plane.telemetry.publisher import TelemetryBuffer, TelemetryPublisher
from meridian_common.service_process import LOOPBACK, pick_free_port
from meridian_common.telemetry_stream import stream_key
from meridian_proto import telemetry_pb2
from regions.local_services import RunningService, start_redis

pytestmark = pytest.mark.integration


def run(scenario: Coroutine[Any, Any, None], timeout_s: float = 20.0) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout_s))


def sample(deployment: str = "a", *, end_ms: int = 0, requests: int = 1,
           router_id: str = "r1") -> telemetry_pb2.TelemetrySample:
    return telemetry_pb2.TelemetrySample(router_id=router_id, region="test", model="m", deployment=deployment,
                                         window_start_unix_ms=max(0, end_ms - 500), window_end_unix_ms=end_ms,
                                         requests=requests)


class Source:
    """A collect callback: one sample per call, numbered in `requests`, with the wall clock as window end."""

    def __init__(self, deployments: tuple[str, ...] = ("a",)) -> None:
        self.calls = 0
        self.deployments = deployments

    def __call__(self) -> list[telemetry_pb2.TelemetrySample]:
        self.calls += 1
        now_ms = int(time.time() * 1000)
        return [sample(d, end_ms=now_ms, requests=self.calls) for d in self.deployments]


async def wait_until(condition: Any, timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(step_s)
    return bool(condition())


def unique_region() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


# --- the buffer, pure ---------------------------------------------------------------------------------------

def stamped(buffer: TelemetryBuffer) -> list[tuple[str, int]]:
    return [(s.deployment, s.dropped_samples) for payload in buffer.payloads()
            for s in telemetry_pb2.TelemetryBatch.FromString(payload).samples]


def test_a_full_buffer_drops_the_oldest_batch_and_counts_its_samples() -> None:
    buffer = TelemetryBuffer(max_batches=2)
    assert buffer.append([sample("a", requests=1), sample("b", requests=1)]) == 0
    assert buffer.append([sample("a", requests=2)]) == 0
    assert buffer.append([]) == 0 and len(buffer) == 2  # nothing to send is not a batch

    assert buffer.append([sample("a", requests=3)]) == 2
    assert len(buffer) == 2 and buffer.dropped_samples == 2
    # a's dropped sample rides on a's newest sample; b has not been seen since, so its count waits
    assert stamped(buffer) == [("a", 0), ("a", 1)]
    assert buffer.unreported_dropped == 1
    buffer.append([sample("b", requests=4)])  # drops the batch that held a's count: carried again
    assert stamped(buffer) == [("a", 1), ("b", 1)]
    assert buffer.dropped_samples == 3 and buffer.unreported_dropped == 1
    assert [s.requests for p in buffer.payloads() for s in telemetry_pb2.TelemetryBatch.FromString(p).samples] \
        == [3, 4]

    buffer.confirm(1)
    assert len(buffer) == 1
    buffer.confirm(10)
    assert len(buffer) == 0 and buffer.payloads() == []


def test_the_buffer_rejects_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="buffer_max_batches"):
        TelemetryBuffer(0)


operations = st.lists(st.one_of(
    st.lists(st.sampled_from("abc"), max_size=3).map(lambda keys: ("append", keys)),
    st.just(("flush", [])),
), max_size=60)


@given(st.integers(1, 4), operations)
def test_every_dropped_sample_is_reported_once_or_still_held(max_batches: int,
                                                             ops: list[tuple[str, list[str]]]) -> None:
    buffer = TelemetryBuffer(max_batches)
    reported = 0
    appended = delivered = 0
    for op, keys in ops:
        if op == "append":
            buffer.append([sample(k) for k in keys])
            appended += len(keys)
            assert len(buffer) <= max_batches
        else:
            batches = [telemetry_pb2.TelemetryBatch.FromString(p) for p in buffer.payloads()]
            reported += sum(s.dropped_samples for b in batches for s in b.samples)
            delivered += sum(len(b.samples) for b in batches)
            buffer.confirm(len(batches))
    held = sum(n for _, n in stamped(buffer))
    assert buffer.dropped_samples == reported + held + buffer.unreported_dropped
    assert appended == delivered + buffer.dropped_samples + len(stamped(buffer))


# --- against a real Redis -----------------------------------------------------------------------------------

def test_published_samples_arrive_in_the_stream_and_the_reader_gets_them(redis_server: RunningService) -> None:
    region = unique_region()

    async def scenario() -> None:
        source = Source(("a", "b"))
        publisher = TelemetryPublisher(redis_server.url, region, interval_s=0.05, collect=source)
        reader = TelemetryReader(redis_server.url, [region], window_s=10)
        task = asyncio.create_task(publisher.run())
        try:
            seen: list[telemetry_pb2.TelemetrySample] = []
            for _ in range(100):  # 5 s at most
                seen = await reader.poll(int(time.time() * 1000))
                if len(seen) >= 6:
                    break
                await asyncio.sleep(0.05)
            assert len(seen) >= 6, f"the reader saw {len(seen)} samples"
            assert {s.deployment for s in seen} == {"a", "b"}
            assert {(s.router_id, s.model) for s in seen} == {("r1", "m")}
            assert publisher.connected and publisher.buffered_batches == 0 and publisher.dropped_samples == 0
            assert publisher.last_flush_unix_ms is not None
            assert abs(publisher.last_flush_unix_ms - time.time() * 1000) < 5_000
        finally:
            await publisher.close()
            await reader.close()
        assert task.done() and task.exception() is None
        client = redis_asyncio.Redis.from_url(redis_server.url)
        try:
            # close() ends with one last tick, so every collected sample is in the stream
            entries = await client.xrange(stream_key(region))
            published = sum(len(telemetry_pb2.TelemetryBatch.FromString(fields[b"batch"]).samples)
                            for _, fields in entries)
            assert published == 2 * source.calls
        finally:
            await client.aclose()

    run(scenario())


def test_the_stream_stays_bounded_however_much_is_published(redis_server: RunningService) -> None:
    region = unique_region()

    async def scenario() -> None:
        publisher = TelemetryPublisher(redis_server.url, region, stream_maxlen=50, collect=Source())
        client = redis_asyncio.Redis.from_url(redis_server.url)
        try:
            for _ in range(500):
                await publisher.publish_once()
            length = await client.xlen(stream_key(region))
            # MAXLEN ~ trims whole macro-nodes (100 entries by default), never below the cap
            assert 50 <= length <= 50 + 100, length
            keys = [key async for key in client.scan_iter(match=f"*{region}*")]
            assert keys == [stream_key(region).encode()]
            assert await client.type(stream_key(region)) == b"stream"
        finally:
            await publisher.close()
            await client.aclose()

    run(scenario())


def test_an_unreachable_redis_costs_a_bounded_buffer_and_never_an_exception() -> None:
    async def scenario() -> None:
        source = Source(("a", "b"))
        url = f"redis://{LOOPBACK}:{pick_free_port()}/0"  # nothing listens there
        publisher = TelemetryPublisher(url, unique_region(), buffer_max_batches=3, collect=source)
        try:
            for _ in range(10):
                started = time.monotonic()
                await publisher.publish_once()
                assert time.monotonic() - started < 1.5
            assert not publisher.connected
            assert publisher.buffered_batches == 3
            assert publisher.dropped_samples == 2 * (10 - 3)
            assert publisher.last_flush_unix_ms is None
        finally:
            await publisher.close()

    run(scenario())


def test_a_hung_redis_costs_one_short_timeout_per_tick() -> None:
    async def scenario() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing

        server = await asyncio.start_server(swallow, LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        publisher = TelemetryPublisher(f"redis://{LOOPBACK}:{port}/0", unique_region(), socket_timeout_s=0.2,
                                       collect=Source())
        try:
            for _ in range(3):
                started = time.monotonic()
                await publisher.publish_once()
                assert time.monotonic() - started < 1.0
            assert not publisher.connected and publisher.buffered_batches == 3
        finally:
            await publisher.close()
            for writer in accepted:
                writer.close()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_a_failing_collect_does_not_stop_the_publisher(redis_server: RunningService) -> None:
    region = unique_region()

    async def scenario() -> None:
        calls = 0

        def collect() -> list[telemetry_pb2.TelemetrySample]:
            nonlocal calls
            calls += 1
            if calls <= 3:
                raise RuntimeError("a bug in collect")
            return [sample(end_ms=int(time.time() * 1000))]

        publisher = TelemetryPublisher(redis_server.url, region, interval_s=0.02, collect=collect)
        task = asyncio.create_task(publisher.run())
        try:
            assert await wait_until(lambda: publisher.last_flush_unix_ms is not None, 3.0)
            assert not task.done()
        finally:
            await publisher.close()
        assert calls > 3

    run(scenario())


def test_a_run_that_died_may_be_run_again_and_a_closed_publisher_runs_no_more() -> None:
    """What its supervisor needs: a restart after an unexpected failure, and no restart loop after close."""
    async def scenario() -> None:
        url = f"redis://{LOOPBACK}:{pick_free_port()}/0"
        publisher = TelemetryPublisher(url, unique_region(), interval_s=0.01, collect=Source())
        first = asyncio.create_task(publisher.run())
        await asyncio.sleep(0.05)
        first.cancel()  # as an unexpected exception would, it ends run without close()
        await asyncio.gather(first, return_exceptions=True)
        second = asyncio.create_task(publisher.run())
        await asyncio.sleep(0.05)
        assert not second.done()
        await publisher.close()
        await asyncio.wait_for(second, 5)
        await asyncio.wait_for(publisher.run(), 5)  # closed: returns at once

    run(scenario())


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[RunningService]]:
    """A Redis for one test, which it may kill and restart; every incarnation is stopped at the end."""
    incarnations = [start_redis(tmp_path / "redis-data", tmp_path / "redis.log")]
    yield incarnations
    for service in incarnations:
        service.stop()


def test_redis_killed_then_restarted_on_the_same_port(own_redis: list[RunningService], tmp_path: Path) -> None:
    first = own_redis[0]
    region = unique_region()

    async def scenario() -> None:
        source = Source(("a", "b"))
        publisher = TelemetryPublisher(first.url, region, interval_s=0.05, buffer_max_batches=5,
                                       socket_timeout_s=0.25, collect=source)
        reader = TelemetryReader(first.url, [region], window_s=30)
        task = asyncio.create_task(publisher.run())
        try:
            assert await wait_until(lambda: publisher.connected, 3.0)

            first.kill()
            calls_at_kill = source.calls
            assert await wait_until(lambda: publisher.dropped_samples >= 10, 5.0), publisher.dropped_samples
            assert not publisher.connected and not task.done()
            assert publisher.buffered_batches == 5
            # the loop kept ticking at its pace while Redis was gone: nothing piled up
            assert source.calls - calls_at_kill >= 5 + publisher.dropped_samples // 2
            assert (await reader.poll(int(time.time() * 1000))) == []
            assert not reader.connected

            own_redis.append(start_redis(tmp_path / "redis-data", tmp_path / "redis.log", port=first.port))
            restarted_at = time.monotonic()
            assert await wait_until(lambda: publisher.connected and publisher.buffered_batches == 0, 2.0)
            assert time.monotonic() - restarted_at < 2.0

            seen: list[telemetry_pb2.TelemetrySample] = []
            for _ in range(60):  # 3 s at most
                seen = await reader.poll(int(time.time() * 1000))
                if any(s.requests > calls_at_kill + 5 for s in seen):
                    break
                await asyncio.sleep(0.05)
            assert reader.connected
            assert any(s.requests > calls_at_kill + 5 for s in seen), "no sample collected after the restart"
            # the samples dropped while Redis was down are reported on the ones that made it
            dropped_reported = sum(s.dropped_samples for s in seen)
            assert dropped_reported == publisher.dropped_samples
            assert publisher.dropped_samples > 0
        finally:
            await publisher.close()
            await reader.close()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    run(scenario())
