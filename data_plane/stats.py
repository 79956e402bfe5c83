"""Live statistics of one deployment as this router sees it: sliding-window latency and TTFT quantiles,
error rate and token throughput, cheap enough to read on every routing decision."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from meridian_common.histogram import BOUNDS_MS, Histogram, WindowedHistogram

_BUCKETS = len(BOUNDS_MS) + 1


@dataclass(frozen=True, slots=True)
class StatsView:
    requests: int  # completed in the window, successes and errors
    errors: int
    error_rate: float
    p50_ms: float  # latency quantiles of successful requests; 0.0 when there is none
    p95_ms: float
    p99_ms: float
    ttft_p95_ms: float  # streams only
    tokens_per_s: float  # output tokens / generation time
    in_flight: int
    # How long the oldest request still in flight has been waiting: a backend that turned slow shows it at
    # once, long before its slow answers are 5 % of the window's p95.
    oldest_in_flight_ms: float = 0.0


EMPTY_VIEW = StatsView(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


class _Slot:
    """One sub-window's counts; the bucket counts mirror the WindowedHistograms' slots."""

    __slots__ = ("slot_id", "latency", "ttft", "requests", "errors", "output_tokens", "generation_s")

    def __init__(self) -> None:
        self.slot_id = -1
        self.latency: list[int] | None = None
        self.ttft: list[int] | None = None
        self.requests = 0
        self.errors = 0
        self.output_tokens = 0
        self.generation_s = 0.0


class DeploymentStats:
    """Mutable per-deployment statistics; every method takes `now` (monotonic seconds) from the caller.

    Quantiles come from running bucket totals kept alongside the WindowedHistograms (which stay the
    mergeable form the telemetry sends), so a refresh is one cumulative sum, not a merge of every slot.
    """

    __slots__ = (
        "in_flight", "_started", "latency", "ttft", "_slot_s", "_slots", "_refresh_s",
        "_latency_total", "_latency_count", "_ttft_total", "_ttft_count",
        "_computed_at", "_fields", "_view",
    )

    def __init__(self, window_s: float = 30.0, refresh_s: float = 0.1, *, slots: int = 6) -> None:
        if refresh_s < 0:
            raise ValueError(f"refresh_s must be >= 0, got {refresh_s}")
        self.in_flight = 0
        self._started: dict[float, int] = {}  # start time -> requests in flight that started then
        self.latency = WindowedHistogram(window_s, slots)
        self.ttft = WindowedHistogram(window_s, slots)
        self._slot_s = window_s / slots
        self._slots = [_Slot() for _ in range(slots)]
        self._refresh_s = refresh_s
        self._latency_total = [0] * _BUCKETS
        self._latency_count = 0
        self._ttft_total = [0] * _BUCKETS
        self._ttft_count = 0
        self._computed_at = float("-inf")
        self._fields: tuple[int, int, float, float, float, float, float, float] | None = None
        self._view = EMPTY_VIEW

    def begin(self, started: float) -> None:
        self.in_flight += 1
        self._started[started] = self._started.get(started, 0) + 1

    def _release(self, started: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        remaining = self._started.get(started, 0) - 1
        if remaining > 0:
            self._started[started] = remaining
        else:
            self._started.pop(started, None)

    def abandon(self, started: float) -> None:
        """The request ended without a verdict on the backend (client gone): only in_flight changes."""
        self._release(started)

    def end(self, now: float, *, started: float, latency_ms: float, ok: bool, ttft_ms: float | None = None,
            output_tokens: int = 0) -> None:
        """Records a finished request that began at `started`. Latency is recorded for successes only: a
        connection refused in 1 ms must not make a broken deployment look fast; errors count in the error
        rate instead."""
        self._release(started)
        slot = self._slot(now)
        slot.requests += 1
        if not ok:
            slot.errors += 1
            return
        self.latency.record(latency_ms, now)
        if slot.latency is None:
            slot.latency = [0] * _BUCKETS
        bucket = bisect_left(BOUNDS_MS, latency_ms)
        slot.latency[bucket] += 1
        self._latency_total[bucket] += 1
        self._latency_count += 1
        generation_ms = latency_ms
        if ttft_ms is not None:
            self.ttft.record(ttft_ms, now)
            if slot.ttft is None:
                slot.ttft = [0] * _BUCKETS
            bucket = bisect_left(BOUNDS_MS, ttft_ms)
            slot.ttft[bucket] += 1
            self._ttft_total[bucket] += 1
            self._ttft_count += 1
            generation_ms = latency_ms - ttft_ms
        if output_tokens > 0 and generation_ms > 0:
            slot.output_tokens += output_tokens
            slot.generation_s += generation_ms / 1000.0

    def view(self, now: float) -> StatsView:
        """The window's figures, recomputed at most every refresh_s; in_flight is always current."""
        fields = self._fields
        if fields is None or not (0.0 <= now - self._computed_at < self._refresh_s):
            fields = self._fields = self._compute(now)
            self._computed_at = now
            self._view = StatsView(*fields, self.in_flight, self._oldest_in_flight_ms(now))
        elif self._view.in_flight != self.in_flight:
            self._view = StatsView(*fields, self.in_flight, self._oldest_in_flight_ms(now))
        return self._view

    def _oldest_in_flight_ms(self, now: float) -> float:
        return max(0.0, (now - min(self._started)) * 1000) if self._started else 0.0

    def _compute(self, now: float) -> tuple[int, int, float, float, float, float, float, float]:
        self._expire(now)
        requests = errors = output_tokens = 0
        generation_s = 0.0
        for slot in self._slots:
            if slot.slot_id != -1:
                requests += slot.requests
                errors += slot.errors
                output_tokens += slot.output_tokens
                generation_s += slot.generation_s
        p50, p95, p99 = quantiles(self._latency_total, self._latency_count, (0.5, 0.95, 0.99))
        (ttft_p95,) = quantiles(self._ttft_total, self._ttft_count, (0.95,))
        return (
            requests,
            errors,
            errors / requests if requests else 0.0,
            p50,
            p95,
            p99,
            ttft_p95,
            output_tokens / generation_s if generation_s > 0 else 0.0,
        )

    def _slot(self, now: float) -> _Slot:
        self._expire(now)
        slot_id = int(now // self._slot_s)
        slot = self._slots[slot_id % len(self._slots)]
        if slot.slot_id != slot_id:
            # Same replacement rule as WindowedHistogram, so the totals stay equal to its snapshot.
            self._drop(slot)
            slot.slot_id = slot_id
        return slot

    def _expire(self, now: float) -> None:
        oldest = int(now // self._slot_s) - len(self._slots) + 1
        for slot in self._slots:
            if slot.slot_id != -1 and slot.slot_id < oldest:
                self._drop(slot)

    def _drop(self, slot: _Slot) -> None:
        if slot.latency is not None:
            self._latency_total = [t - c for t, c in zip(self._latency_total, slot.latency, strict=True)]
            self._latency_count -= sum(slot.latency)
        if slot.ttft is not None:
            self._ttft_total = [t - c for t, c in zip(self._ttft_total, slot.ttft, strict=True)]
            self._ttft_count -= sum(slot.ttft)
        slot.slot_id = -1
        slot.latency = slot.ttft = None
        slot.requests = slot.errors = slot.output_tokens = 0
        slot.generation_s = 0.0


def quantiles(counts: list[int], count: int, qs: tuple[float, ...]) -> tuple[float, ...]:
    """Histogram.quantile for several q at once over raw bucket counts, in one cumulative pass."""
    if count == 0:
        return (0.0,) * len(qs)
    cumulative = list(accumulate(counts))
    result = []
    for q in qs:
        rank = q * count
        index = bisect_left(cumulative, rank)
        if index >= len(BOUNDS_MS):  # the overflow bucket: let Histogram extrapolate its upper bound
            result.append(Histogram(list(counts), 0.0, count).quantile(q))
            continue
        lower = BOUNDS_MS[index - 1] if index > 0 else 0.0
        seen = cumulative[index - 1] if index > 0 else 0
        fraction = (rank - seen) / counts[index]
        result.append(lower + (BOUNDS_MS[index] - lower) * fraction)
    return tuple(result)
