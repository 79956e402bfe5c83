"""Publishes a router's telemetry to its region's Redis stream, off the request path.

Every interval the publisher collects one TelemetryBatch, appends it to a bounded buffer and flushes the
whole buffer in one pipelined round trip (XADD with approximate MAXLEN per batch). When Redis is down
the buffer keeps the newest `buffer_max_batches` batches, drops the oldest, counts the samples dropped
and reports that count on later samples once Redis is back. Nothing here is awaited by a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from meridian_common.logging_setup import event
from meridian_common.redis_connection import redis_client
from meridian_common.redis_url import redis_endpoint
from meridian_common.telemetry_stream import BATCH_FIELD, stream_key
from meridian_proto import telemetry_pb2

log = logging.getLogger(__name__)


Collect = Callable[[], list[telemetry_pb2.TelemetrySample]]
_SampleKey = tuple[str, str]


class TelemetryBuffer:
    """The batches not yet in Redis, oldest first, at most `max_batches` of them. Pure.

    A sample dropped on overflow is counted for its (model, deployment) and the count rides on that
    deployment's next buffered sample (`dropped_samples`), so the control plane's per-deployment sum is
    the number of samples lost. A count that rode on a batch which is itself dropped is carried again.
    """

    __slots__ = ("_batches", "_max_batches", "_unreported", "dropped_samples")

    def __init__(self, max_batches: int) -> None:
        if max_batches < 1:
            raise ValueError(f"buffer_max_batches must be >= 1, got {max_batches}")
        self._batches: deque[telemetry_pb2.TelemetryBatch] = deque()
        self._max_batches = max_batches
        self._unreported: dict[_SampleKey, int] = {}
        self.dropped_samples = 0
        """Samples dropped since this buffer was created."""

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def unreported_dropped(self) -> int:
        """Dropped samples not yet attached to a buffered sample (their deployment has not been seen since)."""
        return sum(self._unreported.values())

    def append(self, samples: Sequence[telemetry_pb2.TelemetrySample]) -> int:
        """Buffers one batch (nothing when `samples` is empty); returns how many samples were dropped."""
        if not samples:
            return 0
        dropped = 0
        while len(self._batches) >= self._max_batches:
            for sample in self._batches.popleft().samples:
                key = (sample.model, sample.deployment)
                self._unreported[key] = self._unreported.get(key, 0) + 1 + sample.dropped_samples
                dropped += 1
        self.dropped_samples += dropped
        batch = telemetry_pb2.TelemetryBatch(samples=samples)
        for sample in batch.samples:
            carried = self._unreported.pop((sample.model, sample.deployment), 0)
            if carried:
                sample.dropped_samples += carried
        self._batches.append(batch)
        return dropped

    def payloads(self) -> list[bytes]:
        return [batch.SerializeToString() for batch in self._batches]

    def confirm(self, count: int) -> None:
        """The oldest `count` batches are in Redis."""
        for _ in range(min(count, len(self._batches))):
            self._batches.popleft()


class TelemetryPublisher:
    """Runs as one background task (`run`); `close` stops it after a last flush attempt."""

    def __init__(
        self,
        redis_url: str,
        region: str,
        *,
        interval_s: float = 0.5,
        buffer_max_batches: int = 120,
        stream_maxlen: int = 2000,
        collect: Collect,
        socket_timeout_s: float = 0.5,
    ) -> None:
        if not region:
            raise ValueError("region must not be empty")
        if interval_s <= 0 or socket_timeout_s <= 0:
            raise ValueError(f"interval_s and socket_timeout_s must be > 0, got {interval_s}, {socket_timeout_s}")
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1, got {stream_maxlen}")
        self._stream = stream_key(region)
        self._endpoint = redis_endpoint(redis_url)
        self._interval_s = interval_s
        self._stream_maxlen = stream_maxlen
        self._collect = collect
        # Short timeouts and no client-side retry: the next tick is the retry, and a hung Redis costs
        # one timeout per tick instead of a pile of waiting flushes.
        self._flush_timeout_s = 2 * socket_timeout_s
        self._client = redis_client(
            redis_url, socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._buffer = TelemetryBuffer(buffer_max_batches)
        self._connected: bool | None = None  # None until the first flush attempt
        self._dropped_at_disconnect = 0
        self._collect_failing = False
        self._last_flush_unix_ms: int | None = None
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._closed = False

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def dropped_samples(self) -> int:
        return self._buffer.dropped_samples

    @property
    def buffered_batches(self) -> int:
        return len(self._buffer)

    @property
    def connected(self) -> bool:
        return bool(self._connected)

    @property
    def last_flush_unix_ms(self) -> int | None:
        return self._last_flush_unix_ms

    async def run(self) -> None:
        """Collects and flushes every `interval_s` until `close()`, at once if it was closed already; never
        raises but CancelledError. After a failure it may be run again (it runs supervised)."""
        if self._running:
            raise RuntimeError("TelemetryPublisher.run() is already running")
        self._running = True
        self._finished.clear()
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self._interval_s
        log.info(event("telemetry_publisher_started", stream=self._stream, redis=self._endpoint,
                       interval_s=self._interval_s, maxlen=self._stream_maxlen))
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=max(0.0, next_tick - loop.time()))
                # A slow tick does not make the next ones burst to catch up.
                next_tick = max(next_tick + self._interval_s, loop.time())
                try:
                    await self.publish_once()
                except Exception:
                    # Unexpected (not a Redis or network error): keep the task alive, try again next tick.
                    log.exception(event("telemetry_publish_failed", stream=self._stream))
        finally:
            self._running = False
            self._finished.set()

    async def publish_once(self) -> None:
        """One tick: collect, buffer, flush. A failing collect, Redis or network never raises here."""
        self._buffer.append(self._collect_safely())
        await self._flush()

    async def close(self) -> None:
        """Stops `run` (its loop ends with one last tick) and closes the Redis client."""
        if self._closed:
            return
        self._stopping.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), timeout=self._flush_timeout_s + 1.0)
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
        log.info(event("telemetry_publisher_closed", stream=self._stream, buffered=len(self._buffer),
                       dropped=self._buffer.dropped_samples))

    def _collect_safely(self) -> list[telemetry_pb2.TelemetrySample]:
        try:
            samples = self._collect()
        except Exception:
            # A bug in collect must not kill telemetry for good; log it once until it recovers.
            if not self._collect_failing:
                log.exception(event("telemetry_collect_failed", stream=self._stream))
            self._collect_failing = True
            return []
        if self._collect_failing:
            log.info(event("telemetry_collect_recovered", stream=self._stream))
        self._collect_failing = False
        return samples

    async def _flush(self) -> None:
        payloads = self._buffer.payloads()
        if not payloads:
            return
        try:
            async with asyncio.timeout(self._flush_timeout_s):
                pipeline = self._client.pipeline(transaction=False)
                for payload in payloads:
                    pipeline.xadd(self._stream, {BATCH_FIELD: payload}, maxlen=self._stream_maxlen,
                                  approximate=True)
                await pipeline.execute()
        except (RedisError, OSError) as error:  # TimeoutError is an OSError
            self._disconnected(error)
            return
        self._buffer.confirm(len(payloads))
        self._last_flush_unix_ms = int(time.time() * 1000)
        if self._connected is not True:
            log.info(event("telemetry_redis_connected", stream=self._stream, redis=self._endpoint,
                           flushed_batches=len(payloads),
                           dropped_while_down=self._buffer.dropped_samples - self._dropped_at_disconnect))
        self._connected = True

    def _disconnected(self, error: BaseException) -> None:
        if self._connected is not False:
            log.warning(event("telemetry_redis_unreachable", stream=self._stream, redis=self._endpoint,
                              error=type(error).__name__, buffered=len(self._buffer),
                              dropped=self._buffer.dropped_samples))
            self._dropped_at_disconnect = self._buffer.dropped_samples
        self._connected = False
