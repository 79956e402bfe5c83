"""Reads an inference engine's own metrics page (vLLM's or SGLang's Prometheus text) into EngineFigures. Pure:
the scraper hands in the page, the served model and the previous scrape; nothing here reads a clock.

Queue and KV-cache figures are gauges read from one page. Tokens per second and the prefix-cache hit rate are
counter deltas between two scrapes of the same engine (a counter that went down, as after a restart, gives no
rate that time); an engine that publishes them as gauges instead (SGLang, older vLLM) is read as it says."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

from meridian_common.engine_figures import EngineFigures

EngineNamesChoice = Literal["auto", "vllm", "sglang"]

Labels = Mapping[str, str]
Page = Mapping[str, tuple[tuple[Labels, float], ...]]
"""sample name -> every (labels, value) of it on the page"""


@dataclass(frozen=True, slots=True)
class EngineNames:
    """Where one engine family puts each figure; each tuple lists names in order of preference (the first one
    the page has is read), so a renamed metric's older name still works."""

    engine: str
    running: tuple[str, ...]
    waiting: tuple[str, ...]
    kv_cache_usage: tuple[str, ...] = ()
    generation_tokens_total: tuple[str, ...] = ()
    generation_tokens_per_s: tuple[str, ...] = ()
    prefix_cache_hits_total: tuple[str, ...] = ()
    prefix_cache_queries_total: tuple[str, ...] = ()
    prefix_cache_hit_rate: tuple[str, ...] = ()


VLLM = EngineNames(
    engine="vllm",
    running=("vllm:num_requests_running",),
    waiting=("vllm:num_requests_waiting",),
    kv_cache_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    generation_tokens_total=("vllm:generation_tokens_total",),
    generation_tokens_per_s=("vllm:avg_generation_throughput_toks_per_s",),  # the V0 engine's gauge
    prefix_cache_hits_total=("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    prefix_cache_queries_total=("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    prefix_cache_hit_rate=("vllm:gpu_prefix_cache_hit_rate",),  # the V0 engine's gauge
)
SGLANG = EngineNames(
    engine="sglang",
    running=("sglang:num_running_reqs",),
    waiting=("sglang:num_queue_reqs",),
    kv_cache_usage=("sglang:token_usage",),
    generation_tokens_total=("sglang:generation_tokens_total",),
    generation_tokens_per_s=("sglang:gen_throughput",),
    prefix_cache_hit_rate=("sglang:cache_hit_rate",),
)
NAMES: Mapping[str, EngineNames] = MappingProxyType({names.engine: names for names in (VLLM, SGLANG)})
# Every sample name any engine's figures are read from: the rest of a page (mostly histogram buckets) is skipped
# before parsing, which runs on the router's event loop.
_READ_NAMES = frozenset(name for names in NAMES.values() for field in fields(EngineNames) if field.name != "engine"
                        for name in getattr(names, field.name))


@dataclass(frozen=True, slots=True)
class EngineReading:
    """What one page says of one served model, before rates: counters as they stand."""

    engine: str
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float | None = None
    generation_tokens_total: float | None = None
    generation_tokens_per_s: float | None = None
    prefix_cache_hits_total: float | None = None
    prefix_cache_queries_total: float | None = None
    prefix_cache_hit_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Scrape:
    """One reading and when it was taken (monotonic seconds), kept to compute the next scrape's rates."""

    reading: EngineReading
    at_s: float


def metrics_url(deployment_url: str, path: str) -> str | None:
    """The engine's metrics page beside an OpenAI-compatible base URL ending in /v1 (`http://h:8000/v1` ->
    `http://h:8000/metrics`); None for a URL without that suffix, whose server root is unknown."""
    base = deployment_url.rstrip("/")
    if not base.endswith("/v1"):
        return None
    return base.removesuffix("/v1") + path


def parse_page(text: str) -> Page | None:
    """Every sample of a Prometheus text page by name; None when the text is not Prometheus exposition (an HTML
    or JSON page answered 200)."""
    samples: dict[str, list[tuple[Labels, float]]] = defaultdict(list)
    wanted = "\n".join(line for line in text.splitlines() if _sample_name(line) in _READ_NAMES)
    if not wanted and not _looks_like_exposition(text):
        return None
    try:
        for family in text_string_to_metric_families(wanted):
            for sample in family.samples:
                samples[sample.name].append((sample.labels, float(sample.value)))
    except (ValueError, TypeError, IndexError):
        return None
    return MappingProxyType({name: tuple(found) for name, found in samples.items()})


def _sample_name(line: str) -> str:
    return line.split("{", 1)[0].split(" ", 1)[0]


def _looks_like_exposition(text: str) -> bool:
    """Prometheus text whose samples are all of other names, or an HTML or JSON page that answered 200."""
    try:
        for _ in text_string_to_metric_families(text):
            pass
    except (ValueError, TypeError, IndexError):
        return False
    return True


def _series(page: Page, names: Sequence[str], served_model: str) -> tuple[float, ...] | None:
    """The values of the first of `names` on the page: the series labelled with `served_model` when some are,
    else all of them (an engine without the label, or serving the model under another name). NaN and infinite
    values are dropped; None when nothing is left."""
    for name in names:
        found = page.get(name)
        if not found:
            continue
        mine = [value for labels, value in found if labels.get("model_name") == served_model]
        values = tuple(v for v in (mine or [value for _, value in found]) if math.isfinite(v))
        return values or None
    return None


def _count(page: Page, names: Sequence[str], served_model: str) -> float | None:
    """Counts add up over series (several engines of one server, data-parallel ranks)."""
    values = _series(page, names, served_model)
    return max(0.0, sum(values)) if values is not None else None


def _fraction(page: Page, names: Sequence[str], served_model: str) -> float | None:
    """Fractions are averaged over series (each engine's share of its own cache), kept within [0, 1]."""
    values = _series(page, names, served_model)
    return min(1.0, max(0.0, sum(values) / len(values))) if values is not None else None


def engine_names(page: Page, choice: EngineNamesChoice) -> EngineNames | None:
    """The names to read: those chosen, or with `auto` the first family whose queue gauges the page has."""
    candidates = NAMES.values() if choice == "auto" else (NAMES[choice],)
    for names in candidates:
        if any(name in page for name in (*names.running, *names.waiting)):
            return names
    return None


def read_page(page: Page, choice: EngineNamesChoice, served_model: str) -> EngineReading | None:
    """The reading of `served_model` on the page, or None when the page has none of the engine's queue gauges
    (the backend has no engine metrics, as Ollama, or is another kind of server)."""
    names = engine_names(page, choice)
    if names is None:
        return None
    running = _count(page, names.running, served_model)
    waiting = _count(page, names.waiting, served_model)
    if running is None and waiting is None:
        return None
    return EngineReading(
        engine=names.engine,
        requests_running=running or 0.0,
        requests_waiting=waiting or 0.0,
        kv_cache_usage=_fraction(page, names.kv_cache_usage, served_model),
        generation_tokens_total=_count(page, names.generation_tokens_total, served_model),
        generation_tokens_per_s=_count(page, names.generation_tokens_per_s, served_model),
        prefix_cache_hits_total=_count(page, names.prefix_cache_hits_total, served_model),
        prefix_cache_queries_total=_count(page, names.prefix_cache_queries_total, served_model),
        prefix_cache_hit_rate=_fraction(page, names.prefix_cache_hit_rate, served_model),
    )


def _delta(before: float | None, after: float | None) -> float | None:
    """A counter's growth; None when either side is missing or it went down (a reset)."""
    if before is None or after is None or after < before:
        return None
    return after - before


def _tokens_per_s(previous: Scrape | None, current: Scrape) -> float | None:
    reading = current.reading
    if previous is not None and previous.reading.engine == reading.engine:
        elapsed_s = current.at_s - previous.at_s
        grown = _delta(previous.reading.generation_tokens_total, reading.generation_tokens_total)
        if grown is not None and elapsed_s > 0:
            return grown / elapsed_s
        if reading.generation_tokens_total is not None:
            return None  # a counter engine whose counter reset, or the same instant: no rate this time
    return reading.generation_tokens_per_s


def _prefix_hit_rate(previous: Scrape | None, current: Scrape) -> float | None:
    reading = current.reading
    if previous is not None and previous.reading.engine == reading.engine:
        queried = _delta(previous.reading.prefix_cache_queries_total, reading.prefix_cache_queries_total)
        hits = _delta(previous.reading.prefix_cache_hits_total, reading.prefix_cache_hits_total)
        if queried is not None and hits is not None:
            return min(1.0, hits / queried) if queried > 0 else None
    return reading.prefix_cache_hit_rate


def engine_figures(previous: Scrape | None, current: Scrape, observed_at_unix_ms: int) -> EngineFigures:
    """The figures of `current`, with rates over the time since `previous` (the last scrape of the same engine
    and model; None for the first, which has rates only where the engine publishes them as gauges)."""
    reading = current.reading
    return EngineFigures(
        requests_running=reading.requests_running,
        requests_waiting=reading.requests_waiting,
        kv_cache_usage=reading.kv_cache_usage,
        generation_tokens_per_s=_tokens_per_s(previous, current),
        prefix_cache_hit_rate=_prefix_hit_rate(previous, current),
        observed_at_unix_ms=observed_at_unix_ms,
    )
