"""Reads the routers' telemetry from the regions' Redis streams and keeps the last `window_s` of samples.

`SampleWindow` is the pure part (which samples are still inside the window); `TelemetryReader` is the
shell: one non-blocking multi-stream XREAD per poll from the last entry id seen of each stream. A Redis
outage leaves the window as it is, so the leader keeps computing on what it last saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from meridian_common.logging_setup import event
from meridian_common.redis_connection import redis_client
from meridian_common.redis_url import redis_endpoint
from meridian_common.telemetry_stream import BATCH_FIELD, stream_key
from meridian_proto import telemetry_pb2

log = logging.getLogger(__name__)


class SampleWindow:
    """The samples whose window ended within the last `window_s`. Pure: `now` comes from the caller.

    A sample stays while `now - window_s <= window_end_unix_ms <= now + window_s`: the upper bound drops
    samples from a router whose clock is far ahead, which would otherwise never age out. At most
    `max_samples` are kept (the earliest received go first), so a flood cannot grow memory.
    """

    __slots__ = ("_window_ms", "_samples", "overflowed")

    def __init__(self, window_s: float, *, max_samples: int = 200_000) -> None:
        if window_s <= 0 or max_samples < 1:
            raise ValueError(f"window_s must be > 0 and max_samples >= 1, got {window_s}, {max_samples}")
        self._window_ms = int(window_s * 1000)
        self._samples: deque[telemetry_pb2.TelemetrySample] = deque(maxlen=max_samples)
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, samples: Iterable[telemetry_pb2.TelemetrySample]) -> None:
        for sample in samples:
            if len(self._samples) == self._samples.maxlen:
                self.overflowed += 1
            self._samples.append(sample)

    def current(self, now_unix_ms: int) -> list[telemetry_pb2.TelemetrySample]:
        oldest, newest = now_unix_ms - self._window_ms, now_unix_ms + self._window_ms
        kept = [s for s in self._samples if oldest <= s.window_end_unix_ms <= newest]
        if len(kept) != len(self._samples):
            self._samples = deque(kept, maxlen=self._samples.maxlen)
        return kept


class TelemetryReader:
    """Polls the telemetry streams of `regions`; `poll` never raises a Redis or network error."""

    def __init__(
        self,
        redis_url: str,
        regions: Sequence[str],
        *,
        window_s: float = 10.0,
        max_entries_per_stream: int = 1000,
        socket_timeout_s: float = 0.5,
        max_samples: int = 200_000,
    ) -> None:
        if not regions:
            raise ValueError("regions must name at least one region")
        if max_entries_per_stream < 1 or socket_timeout_s <= 0:
            raise ValueError(f"max_entries_per_stream must be >= 1 and socket_timeout_s > 0, "
                             f"got {max_entries_per_stream}, {socket_timeout_s}")
        self._streams = [stream_key(region) for region in dict.fromkeys(regions)]
        self._endpoint = redis_endpoint(redis_url)
        self._window_s = window_s
        self._window = SampleWindow(window_s, max_samples=max_samples)
        self._count = max_entries_per_stream
        self._timeout_s = 2 * socket_timeout_s
        self._client = redis_client(
            redis_url, socket_connect_timeout=socket_timeout_s, socket_timeout=socket_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._last_ids: dict[str, str] = {}
        self._connected: bool | None = None
        self.skipped_entries = 0

    @property
    def connected(self) -> bool:
        return bool(self._connected)

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    @property
    def window(self) -> SampleWindow:
        return self._window

    async def poll(self, now_unix_ms: int) -> list[telemetry_pb2.TelemetrySample]:
        """Reads what was added since the last poll (at most `max_entries_per_stream` per stream) and
        returns every sample of the window at `now_unix_ms`."""
        if not self._last_ids:
            # A new reader (say, a new leader) starts with the last window instead of an empty one.
            start = f"{max(0, now_unix_ms - int(self._window_s * 1000))}-0"
            self._last_ids = {stream: start for stream in self._streams}
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.xread(dict(self._last_ids), count=self._count)
        except (RedisError, OSError) as error:  # TimeoutError is an OSError
            if self._connected is not False:
                log.warning(event("telemetry_reader_unreachable", redis=self._endpoint,
                                  error=type(error).__name__, window_samples=len(self._window)))
            self._connected = False
            return self._window.current(now_unix_ms)
        if self._connected is not True:
            log.info(event("telemetry_reader_connected", redis=self._endpoint, streams=len(self._streams)))
        self._connected = True
        for stream, entries in _stream_entries(response):
            self._window.add(self._parse(stream, entries))
        return self._window.current(now_unix_ms)

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError) as error:
            log.info(event("telemetry_reader_close_failed", redis=self._endpoint, error=type(error).__name__))

    def _parse(self, stream: str, entries: Sequence[Any]) -> list[telemetry_pb2.TelemetrySample]:
        samples: list[telemetry_pb2.TelemetrySample] = []
        skipped: dict[str, int] = {}
        first_skipped = ""
        for entry_id, fields in entries:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            self._last_ids[stream] = entry
            payload = fields.get(BATCH_FIELD) if isinstance(fields, dict) else None
            reason = ""
            if not isinstance(payload, bytes):
                reason = "no_batch_field"
            else:
                batch = telemetry_pb2.TelemetryBatch()
                try:
                    batch.ParseFromString(payload)
                except DecodeError:
                    reason = "not_a_telemetry_batch"
                else:
                    samples.extend(batch.samples)
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                first_skipped = first_skipped or entry
        if skipped:
            self.skipped_entries += sum(skipped.values())
            # One line per poll and stream, however many entries were bad.
            log.warning(event("telemetry_entries_skipped", stream=stream, first_id=first_skipped,
                              **dict(sorted(skipped.items()))))
        return samples


def _stream_entries(response: Any) -> list[tuple[str, Sequence[Any]]]:
    """XREAD's reply as (stream, entries) pairs: a list of pairs over RESP2, a dict over RESP3."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else response
    result = []
    for stream, entries in pairs:
        name = stream.decode() if isinstance(stream, bytes) else str(stream)
        # RESP3 wraps each stream's entries in one more list.
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        result.append((name, entries))
    return result
