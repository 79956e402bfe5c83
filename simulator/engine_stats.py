"""The figures a vLLM engine reports about the requests it served: token counters, prefix-cache counters and
latency histograms on vLLM's own bucket bounds, kept as plain numbers that the request path bumps and the
metrics collector reads at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# vLLM's bounds (vllm/v1/metrics/loggers.py), so that dashboards and quantile queries written for vLLM read
# the simulator's histograms the same way.
TTFT_BOUNDS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
    80.0, 160.0, 640.0, 2560.0,
)
ITL_BOUNDS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)
E2E_BOUNDS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)


@dataclass(slots=True)
class BucketCounts:
    """A Prometheus histogram as plain counts: `counts[i]` holds the values above bound i-1 and at most bound
    i, the last slot those above every bound."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"bucket bounds must rise strictly, got {self.bounds}")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        """Records `value` `times` times (a block of tokens that each took as long)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, values at most le) for every bound and `+Inf`, as a Prometheus histogram exposes them."""
        buckets: list[tuple[str, float]] = []
        seen = 0
        for bound, bucket_count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += bucket_count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(seen)))
        return buckets


@dataclass(slots=True)
class EngineStats:
    prompt_tokens: int = 0  # every prompt token of every admitted generation, cached or not (as vLLM counts)
    generation_tokens: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens found cached
    ttft_s: BucketCounts = field(default_factory=lambda: BucketCounts(TTFT_BOUNDS_S))
    itl_s: BucketCounts = field(default_factory=lambda: BucketCounts(ITL_BOUNDS_S))
    e2e_s: BucketCounts = field(default_factory=lambda: BucketCounts(E2E_BOUNDS_S))

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        """Hits / queries in tokens; None before any query."""
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else None
