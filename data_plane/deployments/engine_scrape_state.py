"""When one engine metrics page is due again, and which of its scrapes are worth a log line. Pure: the scraper
passes `now` in and logs the transitions this returns, so a failing backend costs one line when it starts
failing and one when it recovers, never one per scrape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class ScrapeResult(Enum):
    FIGURES = "figures"  # the page had engine figures
    NO_METRICS = "no_metrics"  # 404, or a page without any engine's names: the backend has no engine metrics
    FAILED = "failed"  # unreachable, timed out, or an error status


class ScrapeTransition(Enum):
    STARTED_FAILING = "engine_scrape_failing"
    RECOVERED = "engine_scrape_recovered"
    NO_METRICS = "engine_metrics_absent"


@dataclass(slots=True)
class ScrapeTarget:
    """One metrics page (one backend URL and key, whatever number of deployments it serves)."""

    last: ScrapeResult | None = None
    next_at: float = -math.inf  # monotonic

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, result: ScrapeResult, now: float, retry_without_metrics_s: float) -> ScrapeTransition | None:
        """Notes a scrape's result: a page without engine metrics is not asked for again before
        `retry_without_metrics_s`; any other is due at the next interval. Returns the transition to log, if any."""
        before, self.last = self.last, result
        self.next_at = now + retry_without_metrics_s if result is ScrapeResult.NO_METRICS else -math.inf
        if result is before:
            return None
        if result is ScrapeResult.FAILED:
            return ScrapeTransition.STARTED_FAILING
        if result is ScrapeResult.NO_METRICS:
            return ScrapeTransition.NO_METRICS
        return ScrapeTransition.RECOVERED if before is ScrapeResult.FAILED else None
