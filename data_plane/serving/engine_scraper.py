"""Scrapes the metrics page of every deployment in the router's own region (vLLM's or SGLang's /metrics) every
`engine_metrics.interval_s`, and sets each deployment's engine figures in the router state and its gauges.

A backend URL serving several logical models is fetched once per interval and read once per served model. A
page that is missing (404) or has no engine's names marks its deployments as having no engine metrics and is
tried again only every `retry_without_metrics_s`. At most one fetch per page is in flight: a hung backend
holds up only its own page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import aiohttp

from data_plane.config import EngineMetricsConfig
from data_plane.deployments.engine_metrics import (
    EngineReading,
    Scrape,
    engine_figures,
    metrics_url,
    parse_page,
    read_page,
)
from data_plane.deployments.engine_scrape_state import ScrapeResult, ScrapeTarget, ScrapeTransition
from data_plane.live_state import DeploymentKey, LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from data_plane.serving.forwarding import upstream_headers
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

PageKey = tuple[str, str]
"""(metrics page URL, API key variable): the same page read with another key is another target."""


@dataclass(frozen=True, slots=True)
class FetchedPage:
    """One answer to `GET {metrics page}`, or why there was none (`error`, the exception's type only: some
    errors' text holds the whole URL, and with it any credentials in it)."""

    status: int = 0
    text: str = ""
    error: str = ""


async def fetch_page(session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_s: float
                     ) -> FetchedPage:
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            body = await response.read() if response.status == 200 else b""
            return FetchedPage(response.status, body.decode("utf-8", errors="replace"))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return FetchedPage(error=type(error).__name__)


def _scrape_headers(live: LiveDeployment) -> dict[str, str]:
    # The shared session does not decompress (the relay passes bodies through), so ask for plain text.
    return {**upstream_headers(live.spec), "Accept": "text/plain", "Accept-Encoding": "identity"}


class EngineScraper:
    """Runs as one background task (`run`), supervised; shares the router's client session."""

    def __init__(self, session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics,
                 settings: EngineMetricsConfig) -> None:
        self._session = session
        self._state = state
        self._metrics = metrics
        self._settings = settings
        self._targets: dict[PageKey, ScrapeTarget] = {}
        self._in_flight: dict[PageKey, asyncio.Task[None]] = {}
        self._previous: dict[DeploymentKey, Scrape] = {}

    async def run(self) -> None:
        try:
            while True:
                self.start_due(time.monotonic())
                await asyncio.sleep(self._settings.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()

    def pages(self) -> dict[PageKey, list[LiveDeployment]]:
        """The local deployments by metrics page; a deployment whose URL does not end in /v1 has none."""
        by_page: dict[PageKey, list[LiveDeployment]] = defaultdict(list)
        for live in self._state.live.values():
            if live.spec.region != self._state.region:
                continue
            url = metrics_url(live.spec.url, self._settings.path)
            if url is not None:
                by_page[(url, live.spec.api_key_env)].append(live)
        return by_page

    def start_due(self, now: float) -> None:
        """Starts a fetch of every page that is due and has none in flight; forgets pages no longer in the table."""
        pages = self.pages()
        for gone in self._targets.keys() - pages.keys():
            del self._targets[gone]
        for key, group in pages.items():
            target = self._targets.setdefault(key, ScrapeTarget())
            running = self._in_flight.get(key)
            if (running is None or running.done()) and target.due(now):
                self._in_flight[key] = asyncio.create_task(self._scrape(key, target, group))

    async def _scrape(self, key: PageKey, target: ScrapeTarget, group: list[LiveDeployment]) -> None:
        answer = await fetch_page(self._session, key[0], _scrape_headers(group[0]), self._settings.timeout_s)
        result, why = self.apply(answer, group, time.monotonic(), int(time.time() * 1000))
        transition = target.record(result, time.monotonic(), self._settings.retry_without_metrics_s)
        if transition is not None:
            names = ",".join(live.spec.name for live in group)
            line = event(transition.value, region=self._state.region, deployments=names, reason=why or "ok")
            if transition is ScrapeTransition.STARTED_FAILING:
                log.warning(line)
            else:
                log.info(line)

    def apply(self, answer: FetchedPage, group: list[LiveDeployment], now: float, now_unix_ms: int
              ) -> tuple[ScrapeResult, str]:
        """Sets the engine figures of every deployment of one page from its answer; returns the result and, for
        a page without figures, why."""
        if answer.error or (answer.status != 200 and answer.status != 404):
            reason = "unreachable" if answer.error else "status"
            for live in group:
                self._metrics.engine_scrape_errors.labels(self._state.region, live.spec.name, reason).inc()
                self._clear(live, forget=False)
            return ScrapeResult.FAILED, answer.error or f"http_{answer.status}"
        page = parse_page(answer.text) if answer.status == 200 else None
        found = False
        for live in group:
            reading = read_page(page, self._settings.names, live.spec.served_model) if page is not None else None
            key = (live.model, live.spec.name)
            if reading is None:
                self._clear(live, forget=True)
                continue
            current = Scrape(reading, now)
            live.engine = engine_figures(self._previous.get(key), current, now_unix_ms)
            live.engine_at = now
            self._previous[key] = current
            self._calibrate_prefixes(live, reading)
            self._record(live)
            found = True
        if found:
            return ScrapeResult.FIGURES, ""
        why = "http_404" if answer.status == 404 else ("not_prometheus" if page is None else "no_engine_names")
        return ScrapeResult.NO_METRICS, why

    def _calibrate_prefixes(self, live: LiveDeployment, reading: EngineReading) -> None:
        """The engine's prefix-cache counters tell the deployment's prefix index how much it may believe."""
        hits, queries = reading.prefix_cache_hits_total, reading.prefix_cache_queries_total
        if live.prefixes is None or hits is None or queries is None:
            return
        before = live.prefixes.capacity
        resized = live.prefixes.calibrate(hits, queries)
        if resized is not None:
            log.info(event("prefix_index_resized", model=live.model, deployment=live.spec.name, blocks_from=before,
                           blocks_to=resized))

    def _labels(self, live: LiveDeployment) -> tuple[str, str, str, str]:
        return self._state.region, live.model, live.spec.name, live.spec.architecture

    def _record(self, live: LiveDeployment) -> None:
        figures, labels, metrics = live.engine, self._labels(live), self._metrics
        assert figures is not None
        metrics.engine_requests_running.labels(*labels).set(figures.requests_running)
        metrics.engine_requests_waiting.labels(*labels).set(figures.requests_waiting)
        for gauge, value in ((metrics.engine_kv_cache_usage, figures.kv_cache_usage),
                             (metrics.engine_generation_tokens_per_second, figures.generation_tokens_per_s)):
            if value is not None:
                gauge.labels(*labels).set(value)
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)

    def _clear(self, live: LiveDeployment, *, forget: bool) -> None:
        """No figures this time. A failed scrape's last figures age out of routing (stale_after_s); a page without
        engine metrics (`forget`) leaves none. The gauges go at once: a dashboard never shows a stale queue."""
        if forget:
            live.engine = None
            self._previous.pop((live.model, live.spec.name), None)
        labels, metrics = self._labels(live), self._metrics
        for gauge in (metrics.engine_requests_running, metrics.engine_requests_waiting,
                      metrics.engine_kv_cache_usage, metrics.engine_generation_tokens_per_second):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
