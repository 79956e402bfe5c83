"""Live statistics of one deployment as this router sees it, cheap enough to read on every routing decision.

An LLM answer's time is time to first token (TTFT) plus time per output token (TPOT) times its length, so
the two are kept apart: a recent, time-decayed mean of each (what prediction reads: the newest answers
dominate, so a recovered backend is seen as recovered from its first good answer) and their p95 over a
sliding window (what operators and breakers read). Whole-answer latency is kept for operators only.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate
from typing import NamedTuple

from meridian_common.histogram import BOUNDS_MS, Histogram

_BUCKETS = len(BOUNDS_MS) + 1
DEFAULT_WINDOW_S = 10.0
DEFAULT_DECAY_S = 2.0
DEFAULT_STALE_AFTER_S = 10.0


class StatsView(NamedTuple):
    """A NamedTuple rather than a frozen dataclass: every deployment's view is read on every request."""

    requests: int  # finished in the window: answers and failures
    errors: int
    error_rate: float
    answers: int  # successful answers in the window
    output_tokens: int  # their completion tokens
    ttft_ms: float | None  # recent time to first token; None when no sample for stale_after_s
    tpot_ms: float | None  # recent time per output token; None when no sample for stale_after_s
    ttft_p95_ms: float  # over the window; 0.0 with no sample
    tpot_p95_ms: float
    latency_p50_ms: float  # whole answers, for operators: routing never reads them
    latency_p95_ms: float
    in_flight: int
    # How long the oldest stream in flight has waited for its first token: a backend that turned slow shows
    # it at once, long before its slow answers finish.
    waiting_first_token_ms: float = 0.0
    idle_s: float = math.inf  # since a request was last sent to the deployment


EMPTY_VIEW = StatsView(0, 0, 0.0, 0, 0, None, None, 0.0, 0.0, 0.0, 0.0, 0)


MIN_WEIGHT = 0.05  # under a burst of simultaneous answers, each still counts: about the last 20 of them


def decay_weight(gap_s: float, decay_s: float) -> float:
    """A new sample's weight in a mean over time: 1 - exp(-gap / decay_s), never under MIN_WEIGHT."""
    return max(1.0 - math.exp(-max(0.0, gap_s) / decay_s), MIN_WEIGHT)


class _MeanOverTime:
    """What a mean over time keeps besides its value: its time constants and when its last sample came."""

    __slots__ = ("_decay_s", "_stale_after_s", "last_at")

    def __init__(self, decay_s: float, stale_after_s: float) -> None:
        if not (decay_s > 0 and stale_after_s > 0):
            raise ValueError(f"decay_s and stale_after_s must be > 0, got {decay_s}, {stale_after_s}")
        self._decay_s = decay_s
        self._stale_after_s = stale_after_s
        self.last_at = -math.inf

    def _weight(self, now: float, known: bool) -> float | None:
        """The weight of a sample at `now`; None when it starts the mean afresh (nothing known, or stale)."""
        gap_s = now - self.last_at
        self.last_at = max(self.last_at, now)
        if not known or gap_s > self._stale_after_s:
            return None
        return decay_weight(gap_s, self._decay_s)

    def _fresh(self, now: float) -> bool:
        return now - self.last_at <= self._stale_after_s


class DecayingMean(_MeanOverTime):
    """An exponentially weighted mean over time, not over samples: a sample weighs `decay_weight` of the time
    since the previous one. Under steady traffic it averages the last few seconds; after a quiet spell the first
    new sample outweighs everything before; past `stale_after_s` without a sample it knows nothing, and the next
    sample starts it afresh."""

    __slots__ = ("_value",)

    def __init__(self, decay_s: float, stale_after_s: float) -> None:
        super().__init__(decay_s, stale_after_s)
        self._value: float | None = None

    def add(self, value: float, now: float) -> None:
        weight = self._weight(now, self._value is not None)
        if weight is None or self._value is None:
            self._value = value
        else:
            self._value += weight * (value - self._value)

    def value(self, now: float) -> float | None:
        """The mean, or None when no sample came for `stale_after_s`."""
        return self._value if self._value is not None and self._fresh(now) else None

    def reset(self) -> None:
        self._value = None
        self.last_at = -math.inf

    def replace(self, value: float, now: float) -> None:
        """What is known now is this one measurement (nothing newer came to average it with)."""
        self._value = value
        self.last_at = now


class DecayingMeans(_MeanOverTime):
    """Several means over time of values that come together (one weight for all, as DecayingMean's), known or
    unknown together."""

    __slots__ = ("_values",)

    def __init__(self, decay_s: float, stale_after_s: float) -> None:
        super().__init__(decay_s, stale_after_s)
        self._values: list[float] | None = None

    def add(self, values: tuple[float, ...], now: float) -> None:
        current = self._values
        weight = self._weight(now, current is not None)
        if weight is None or current is None:
            self._values = list(values)
        else:
            for index, value in enumerate(values):
                current[index] += weight * (value - current[index])

    def values(self, now: float) -> list[float] | None:
        """The means (not to be changed), or None when no sample came for `stale_after_s`."""
        return self._values if self._values is not None and self._fresh(now) else None


class RollingHistogram:
    """Counts in fixed log-spaced buckets over a sliding window of `slots` sub-windows, with running totals
    so that quantiles cost one cumulative sum, not a merge of every slot."""

    __slots__ = ("_slot_s", "_ids", "_counts", "_total", "count", "_expired_for")

    def __init__(self, window_s: float, slots: int) -> None:
        self._slot_s = window_s / slots
        self._ids = [-1] * slots
        self._counts: list[list[int] | None] = [None] * slots
        self._total = [0] * _BUCKETS
        self.count = 0
        self._expired_for = -math.inf  # the latest sub-window expired for: within it nothing more is to drop

    def record(self, value_ms: float, now: float) -> None:
        self.expire(now)
        slot_id = int(now // self._slot_s)
        index = slot_id % len(self._ids)
        if self._ids[index] != slot_id:
            self._drop(index)
            self._ids[index] = slot_id
        counts = self._counts[index]
        if counts is None:
            counts = self._counts[index] = [0] * _BUCKETS
        bucket = bisect_left(BOUNDS_MS, value_ms)
        counts[bucket] += 1
        self._total[bucket] += 1
        self.count += 1

    def expire(self, now: float) -> None:
        current = int(now // self._slot_s)
        if current <= self._expired_for:
            return
        self._expired_for = current
        oldest = current - len(self._ids) + 1
        for index, slot_id in enumerate(self._ids):
            if slot_id != -1 and slot_id < oldest:
                self._drop(index)

    def quantiles(self, now: float, qs: tuple[float, ...]) -> tuple[float, ...]:
        self.expire(now)
        return quantiles(self._total, self.count, qs)

    def snapshot(self, now: float) -> Histogram:
        self.expire(now)
        return Histogram(list(self._total), 0.0, self.count)

    def clear(self) -> None:
        for index in range(len(self._ids)):
            self._drop(index)

    def _drop(self, index: int) -> None:
        counts = self._counts[index]
        if counts is not None:
            self._total = [t - c for t, c in zip(self._total, counts, strict=True)]
            self.count -= sum(counts)
        self._ids[index] = -1
        self._counts[index] = None


class _Slot:
    """One sub-window's counters, aligned with the RollingHistograms' slots."""

    __slots__ = ("slot_id", "requests", "errors", "answers", "output_tokens")

    def __init__(self) -> None:
        self.slot_id = -1
        self.requests = self.errors = self.answers = self.output_tokens = 0


class DeploymentStats:
    """Mutable per-deployment statistics; every method takes `now` (monotonic seconds) from the caller."""

    __slots__ = (
        "in_flight", "_waiting", "_last_sent_at", "_slot_s", "_slots", "latency", "ttft", "tpot",
        "recent_ttft", "recent_tpot", "_ttft_since_probe", "_tpot_since_probe", "_refresh_s", "_computed_at",
        "_view", "_expired_for",
    )

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, refresh_s: float = 0.1, *, slots: int = 10,
                 decay_s: float = DEFAULT_DECAY_S, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        if refresh_s < 0 or window_s <= 0 or slots < 1:
            raise ValueError(f"window_s and slots must be > 0 and refresh_s >= 0, got {window_s}, {slots}, "
                             f"{refresh_s}")
        self.in_flight = 0
        self._waiting: dict[float, int] = {}  # start time -> streams in flight still waiting for a first token
        self._last_sent_at = -math.inf
        self._slot_s = window_s / slots
        self._slots = [_Slot() for _ in range(slots)]
        self.latency = RollingHistogram(window_s, slots)
        self.ttft = RollingHistogram(window_s, slots)
        self.tpot = RollingHistogram(window_s, slots)
        self.recent_ttft = DecayingMean(decay_s, stale_after_s)
        self.recent_tpot = DecayingMean(decay_s, stale_after_s)
        self._ttft_since_probe = self._tpot_since_probe = False
        self._refresh_s = refresh_s
        self._computed_at = -math.inf
        self._view = EMPTY_VIEW
        self._expired_for = -math.inf  # as RollingHistogram's

    def begin(self, started: float, *, awaiting_first_token: bool = False, probe: bool = False) -> None:
        """A request sent at `started`. A health probe holds a slot like any request but is not traffic: the
        deployment stays idle for the purpose of trials."""
        self.in_flight += 1
        if not probe:
            self._last_sent_at = max(self._last_sent_at, started)
        if awaiting_first_token:
            self._waiting[started] = self._waiting.get(started, 0) + 1

    def first_token(self, started: float) -> None:
        """The stream that began at `started` received its first token."""
        remaining = self._waiting.get(started, 0) - 1
        if remaining > 0:
            self._waiting[started] = remaining
        else:
            self._waiting.pop(started, None)

    def abandon(self, started: float) -> None:
        """The request ended without a verdict on the backend (client gone): only in_flight changes."""
        self.in_flight = max(0, self.in_flight - 1)
        self.first_token(started)

    def end(self, now: float, *, started: float, ok: bool, latency_ms: float, ttft_ms: float | None = None,
            tpot_ms: float | None = None, output_tokens: int = 0, ttft_measured: bool = True) -> None:
        """Records a finished request that began at `started`. Timings are recorded for answers only: a
        connection refused in 1 ms must not make a broken deployment look fast; failures count in the error
        rate instead. A TTFT not `ttft_measured` (a whole answer's, derived from the estimate itself) goes to
        the window but not into the recent TTFT, which it would only anchor where it was."""
        self.abandon(started)
        slot = self._slot(now)
        slot.requests += 1
        if not ok:
            slot.errors += 1
            return
        slot.answers += 1
        slot.output_tokens += max(0, output_tokens)
        self.latency.record(latency_ms, now)
        if ttft_ms is not None:
            self.ttft.record(ttft_ms, now)
            if ttft_measured:
                self.recent_ttft.add(ttft_ms, now)
                self._ttft_since_probe = True
        if tpot_ms is not None:
            self.tpot.record(tpot_ms, now)
            self.recent_tpot.add(tpot_ms, now)
            self._tpot_since_probe = True

    def record_probe(self, now: float, ttft_ms: float, tpot_ms: float | None) -> None:
        """A health probe's short answer, kept out of the window's figures (which describe live answers). Among
        live answers it is one more sample; with none since the previous probe it is all that is known now, so
        it replaces the estimate: a deployment that lost its traffic is seen to slow down or recover at the
        next probe, not after several."""
        _probe_into(self.recent_ttft, ttft_ms, now, averaged=self._ttft_since_probe)
        if tpot_ms is not None:
            _probe_into(self.recent_tpot, tpot_ms, now, averaged=self._tpot_since_probe)
        self._ttft_since_probe = self._tpot_since_probe = False

    def view(self, now: float) -> StatsView:
        """The figures at `now`: the window's counts and p95s recomputed at most every refresh_s; the recent
        TTFT and TPOT and the in-flight figures always current."""
        view = self._view
        if not (0.0 <= now - self._computed_at < self._refresh_s):
            view = self._view = self._compute(now)
            self._computed_at = now
        waiting_ms = max(0.0, (now - min(self._waiting)) * 1000) if self._waiting else 0.0
        return view._replace(ttft_ms=self.recent_ttft.value(now), tpot_ms=self.recent_tpot.value(now),
                             in_flight=self.in_flight, waiting_first_token_ms=waiting_ms,
                             idle_s=now - self._last_sent_at)

    def _compute(self, now: float) -> StatsView:
        self._expire(now)
        requests = errors = answers = output_tokens = 0
        for slot in self._slots:
            if slot.slot_id != -1:
                requests += slot.requests
                errors += slot.errors
                answers += slot.answers
                output_tokens += slot.output_tokens
        latency_p50, latency_p95 = self.latency.quantiles(now, (0.5, 0.95))
        (ttft_p95,) = self.ttft.quantiles(now, (0.95,))
        (tpot_p95,) = self.tpot.quantiles(now, (0.95,))
        return StatsView(requests, errors, errors / requests if requests else 0.0, answers, output_tokens, None, None,
                         ttft_p95, tpot_p95, latency_p50, latency_p95, self.in_flight)

    def _slot(self, now: float) -> _Slot:
        self._expire(now)
        slot_id = int(now // self._slot_s)
        slot = self._slots[slot_id % len(self._slots)]
        if slot.slot_id != slot_id:
            slot.slot_id = slot_id
            slot.requests = slot.errors = slot.answers = slot.output_tokens = 0
        return slot

    def _expire(self, now: float) -> None:
        current = int(now // self._slot_s)
        if current <= self._expired_for:
            return
        self._expired_for = current
        oldest = current - len(self._slots) + 1
        for slot in self._slots:
            if slot.slot_id != -1 and slot.slot_id < oldest:
                slot.slot_id = -1
                slot.requests = slot.errors = slot.answers = slot.output_tokens = 0


def _probe_into(mean: DecayingMean, value: float, now: float, *, averaged: bool) -> None:
    if averaged:
        mean.add(value, now)
    else:
        mean.replace(value, now)


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
