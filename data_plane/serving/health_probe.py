"""Active health checks: a periodic `GET {url}/models` per backend, which must answer 2xx and list each
deployment's served model, fed into the same health state as live traffic; and a short streamed answer whose
TTFT and TPOT refresh the estimates of a deployment that gets little or no traffic (so one that recovered is
seen to have recovered). Backends shared by several models are probed once."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from data_plane.live_state import LiveDeployment, RouterState
from data_plane.metrics import RouterMetrics
from data_plane.policies.prediction import known_figures
from data_plane.serving.answer_timing import AnswerTiming, streamed_timing
from data_plane.serving.backend_answer import listed_models, models_probe_failure
from data_plane.serving.forwarding import upstream_headers
from data_plane.serving.outcome import OutcomeRecorder, learn_timing, prediction, report_health
from data_plane.serving.sse_events import SseFramer
from data_plane.serving.sse_usage import StreamUsageScanner
from data_plane.serving.usage import estimate_tokens

_LATENCY_PROBE_PROMPT = "Count from one to ten."
_LATENCY_PROBE_PROMPT_TOKENS = estimate_tokens(len("user\n" + _LATENCY_PROBE_PROMPT + "\n"))
_MIN_READS_FOR_TPOT = 3


@dataclass(frozen=True, slots=True)
class ModelsProbe:
    """One backend's answer to `GET {url}/models`, or why there was none."""

    status: int = 0
    listed: frozenset[str] | None = None
    error: str = ""

    def failure(self, served_model: str) -> str | None:
        """Why a deployment of this backend serving `served_model` is unhealthy, or None."""
        return self.error or models_probe_failure(self.status, self.listed, served_model)


async def probe(session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout_s: float) -> ModelsProbe:
    try:
        async with session.get(f"{url}/models", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            return ModelsProbe(response.status, listed_models(await response.read()))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        # The type alone: some errors' text holds the whole url, and with it any credentials in it.
        return ModelsProbe(error=f"GET /models failed: {type(error).__name__}")


async def probe_latency(session: aiohttp.ClientSession, url: str, served_model: str, headers: dict[str, str],
                        tokens: int, timeout_s: float,
                        on_first_byte: Callable[[], None] = lambda: None) -> AnswerTiming | None:
    """The TTFT and TPOT of a short streamed chat completion, timed as the router times a stream. A probe
    still waiting for its first token at the timeout counts as that slow (the backend is at least that slow).
    None when the backend refused or could not be reached."""
    body = orjson.dumps({"model": served_model, "messages": [{"role": "user", "content": _LATENCY_PROBE_PROMPT}],
                         "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}})
    started = time.monotonic()
    first_at: float | None = None
    framer, scanner = SseFramer(), StreamUsageScanner()
    reads = 0
    try:
        async with session.post(f"{url}/chat/completions", data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status != 200:
                return None
            async for chunk in response.content.iter_any():
                if first_at is None:
                    first_at = time.monotonic()
                    on_first_byte()
                reads += 1
                for event in framer.feed(chunk):
                    scanner.observe(event)
            scanner.observe(framer.tail())
    except TimeoutError:
        return AnswerTiming(timeout_s * 1000, None) if first_at is None else None
    except (aiohttp.ClientError, OSError):
        return None
    if first_at is None:
        return None
    completion_tokens = scanner.reported[1] if scanner.reported else scanner.content_chunks
    timing = streamed_timing((time.monotonic() - started) * 1000, (first_at - started) * 1000, completion_tokens)
    if reads < _MIN_READS_FOR_TPOT:
        # The answer arrived in one or two reads (held up on the way, or read late by this busy event loop):
        # the gaps between its tokens were not seen, and dividing by its length would invent a fast backend.
        return AnswerTiming(timing.ttft_ms, None)
    return timing


async def _measure_latency(session: aiohttp.ClientSession, state: RouterState, group: list[LiveDeployment],
                           outcomes: OutcomeRecorder) -> None:
    settings = state.health_settings
    spec = group[0].spec
    if any(0 < live.spec.max_concurrency <= live.stats.in_flight for live in group):
        return  # full: live answers say enough, and a probe must not take a slot from a client
    now = time.monotonic()
    if any(live.saturation(now) is not None for live in group):
        return  # the backend answered 429: it asked for no request until its Retry-After, probes included
    # The probe holds a slot while it runs, so that clients' requests and it never exceed max_concurrency, and
    # counts as a stream awaiting its first token: a probe stuck in a saturated backend's queue shows at once.
    started = time.monotonic()
    sizes = [state.send_size(live, _LATENCY_PROBE_PROMPT_TOKENS, settings.latency_probe_tokens, (), started)
             for live in group]
    for live in group:
        live.stats.begin(started, awaiting_first_token=True, probe=True)

    def first_byte() -> None:
        for live in group:
            live.stats.first_token(started)

    try:
        timing = await probe_latency(session, spec.url, spec.served_model, upstream_headers(spec),
                                     settings.latency_probe_tokens, settings.latency_probe_timeout_s, first_byte)
    finally:
        for live in group:
            live.stats.abandon(started)
    if timing is None:
        return
    now = time.monotonic()
    for live, size in zip(group, sizes, strict=True):
        known = known_figures(live.stats.view(now), live.spec)
        learn_timing(live, size, known, prediction(live, size, known, now), now, ttft_ms=timing.ttft_ms,
                     tpot_ms=timing.tpot_ms)
        live.stats.record_probe(now, timing.ttft_ms, timing.tpot_ms)
        outcomes.probe_verdict(live, timing, now)


async def probe_all(session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics,
                    latency: LatencyProbes | None = None, outcomes: OutcomeRecorder | None = None) -> None:
    """One round: every backend's `/models`; then, with `latency`, a latency probe of each healthy deployment
    whose previous one has finished (they run apart from the round, which a saturated backend would hold up)."""
    by_backend: dict[tuple[str, str], list[LiveDeployment]] = defaultdict(list)
    for live in state.live.values():
        by_backend[(live.spec.url, live.spec.api_key_env)].append(live)
    settings = state.health_settings
    results = await asyncio.gather(*(
        probe(session, url, upstream_headers(group[0].spec), settings.timeout_s)
        for (url, _), group in by_backend.items()
    ))
    for group, answer in zip(by_backend.values(), results, strict=True):
        for live in group:
            report_health(metrics, state.region, live, live.health.record_probe(answer.failure(live.spec.served_model)))
            metrics.health_state.labels(state.region, live.model, live.spec.name,
                                        live.spec.architecture).set(1 if live.health.healthy else 0)
    if latency is not None and outcomes is not None and settings.latency_probe_tokens:
        by_model: dict[tuple[str, str, str], list[LiveDeployment]] = defaultdict(list)
        for (url, key_env), group in by_backend.items():
            for live in group:
                if live.health.healthy:
                    by_model[(url, key_env, live.spec.served_model)].append(live)
        for key, group in by_model.items():
            latency.start(key, _measure_latency(session, state, group, outcomes))


class LatencyProbes:
    """The latency probes in flight, at most one per backend and model: a probe of a saturated backend waits
    for its whole queue, and the next one starts only when it is done."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, str], asyncio.Task[None]] = {}

    def start(self, key: tuple[str, str, str], probe_coroutine: Coroutine[Any, Any, None]) -> None:
        running = self._running.get(key)
        if running is not None and not running.done():
            probe_coroutine.close()
            return
        self._running[key] = asyncio.create_task(probe_coroutine)

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_health_checks(session: aiohttp.ClientSession, state: RouterState, metrics: RouterMetrics,
                            outcomes: OutcomeRecorder) -> None:
    latency = LatencyProbes()
    try:
        while True:
            await probe_all(session, state, metrics, latency, outcomes)
            await asyncio.sleep(state.health_settings.interval_s)
    finally:
        await latency.close()
