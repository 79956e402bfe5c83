"""Latency histograms that merge by addition, so quantiles stay exact across routers and regions.

Every histogram uses the same fixed, log-spaced bucket bounds (about 9 % apart), so merging two is
adding their counts; a quantile is interpolated inside its bucket. Averaging percentiles would not
merge; this does.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meridian_proto import telemetry_pb2

_SMALLEST_BOUND_MS = 0.01
_GROWTH = 1.09
_LARGEST_BOUND_MS = 600_000.0


def _log_spaced_bounds() -> tuple[float, ...]:
    count = math.ceil(math.log(_LARGEST_BOUND_MS / _SMALLEST_BOUND_MS) / math.log(_GROWTH)) + 1
    return tuple(round(_SMALLEST_BOUND_MS * _GROWTH**i, 6) for i in range(count))


BOUNDS_MS: tuple[float, ...] = _log_spaced_bounds()
"""Upper bounds of the buckets; a last, overflow bucket holds everything above the largest bound."""


class IncompatibleHistogram(ValueError):
    """Raised when a histogram from the wire was built on other bucket bounds."""


@dataclass(slots=True)
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))
    sum_ms: float = 0.0
    count: int = 0

    def record(self, value_ms: float) -> None:
        self.counts[bisect_left(BOUNDS_MS, value_ms)] += 1
        self.sum_ms += value_ms
        self.count += 1

    def merge(self, other: Histogram) -> None:
        for index, bucket_count in enumerate(other.counts):
            if bucket_count:
                self.counts[index] += bucket_count
        self.sum_ms += other.sum_ms
        self.count += other.count

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.sum_ms, self.count)

    @property
    def mean_ms(self) -> float:
        return self.sum_ms / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1) in ms, interpolated within its bucket; 0.0 when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, bucket_count in enumerate(self.counts):
            if bucket_count == 0:
                continue
            if seen + bucket_count >= rank:
                lower = BOUNDS_MS[index - 1] if index > 0 else 0.0
                upper = BOUNDS_MS[index] if index < len(BOUNDS_MS) else lower * _GROWTH
                fraction = (rank - seen) / bucket_count
                return lower + (upper - lower) * fraction
            seen += bucket_count
        return BOUNDS_MS[-1]

    def to_proto(self) -> telemetry_pb2.Histogram:
        """Without `bounds_ms`: empty bounds mean the shared ones, which would otherwise be most of every
        telemetry sample's bytes."""
        return telemetry_pb2.Histogram(counts=self.counts, sum_ms=self.sum_ms, count=self.count)

    @classmethod
    def from_proto(cls, message: telemetry_pb2.Histogram) -> Histogram:
        if message.count == 0 and not message.counts:
            return cls()
        shared_bounds = not message.bounds_ms or tuple(message.bounds_ms) == BOUNDS_MS
        if not shared_bounds or len(message.counts) != len(BOUNDS_MS) + 1:
            raise IncompatibleHistogram(
                f"histogram has {len(message.bounds_ms)} bounds, expected the shared {len(BOUNDS_MS)}"
            )
        return cls(list(message.counts), message.sum_ms, message.count)

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> Histogram:
        histogram = cls()
        for value in values_ms:
            histogram.record(value)
        return histogram


def merged(histograms: Sequence[Histogram]) -> Histogram:
    total = Histogram()
    for histogram in histograms:
        total.merge(histogram)
    return total


class WindowedHistogram:
    """A sliding window of histograms: `slots` sub-windows of `slot_s` seconds each.

    Callers pass `now` (monotonic seconds) so that the window is a pure function of its inputs.
    """

    __slots__ = ("_slot_s", "_slots", "_slot_ids")

    def __init__(self, window_s: float = 30.0, slots: int = 6) -> None:
        if window_s <= 0 or slots <= 0:
            raise ValueError(f"window_s and slots must be positive, got {window_s}, {slots}")
        self._slot_s = window_s / slots
        self._slots = [Histogram() for _ in range(slots)]
        self._slot_ids = [-1] * slots

    def _current(self, now: float) -> Histogram:
        slot_id = int(now // self._slot_s)
        index = slot_id % len(self._slots)
        if self._slot_ids[index] != slot_id:
            self._slots[index] = Histogram()
            self._slot_ids[index] = slot_id
        return self._slots[index]

    def record(self, value_ms: float, now: float) -> None:
        self._current(now).record(value_ms)

    def snapshot(self, now: float) -> Histogram:
        """The merged histogram of the slots still inside the window at `now`."""
        oldest = int(now // self._slot_s) - len(self._slots) + 1
        return merged([h for h, sid in zip(self._slots, self._slot_ids, strict=True) if sid >= oldest])
