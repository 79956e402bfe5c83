"""The router's Prometheus metrics, one registry per router so several can live in one process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from data_plane.metric_tallies import CounterTally, GaugeReading, HistogramTally, TallyCollector

_Tally = TypeVar("_Tally", CounterTally, HistogramTally, GaugeReading)

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TPOT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)
_DECISION_BUCKETS_S = (5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3)
_QUEUE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

BREAKER_STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}

_DEPLOYMENT = ("region", "model", "deployment", "architecture")


@dataclass
class RouterMetrics:
    """The metrics updated on every request are tallies (`metric_tallies`), updated with a label tuple; the rest
    are prometheus-client's."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _tallies: TallyCollector = field(default_factory=TallyCollector, repr=False)

    def _tally(self, member: _Tally) -> _Tally:
        self._tallies.add(member)
        return member

    def restarts(self, region: str) -> Callable[[str], None]:
        """Counts the restarts of the router's supervised background loops (`meridian_common.supervision`)."""
        return lambda loop: self.background_restarts.labels(region, loop).inc()

    def __post_init__(self) -> None:
        r = self.registry
        r.register(self._tallies)
        self.requests = self._tally(CounterTally(
            "meridian_requests", "Requests answered, by the deployment that served them ('none' if no "
            "deployment could) and HTTP status.", (*_DEPLOYMENT, "policy", "status")))
        self.latency = self._tally(HistogramTally(
            "meridian_request_latency_seconds", "Backend call latency, first attempt to last byte.",
            _DEPLOYMENT, _LATENCY_BUCKETS_S))
        self.ttft = self._tally(HistogramTally(
            "meridian_ttft_seconds", "Time to first token of streamed responses.", _DEPLOYMENT, _LATENCY_BUCKETS_S))
        self.tpot = self._tally(HistogramTally(
            "meridian_tpot_seconds", "Time per output token after the first (measured on streams, derived from "
            "the total time of whole answers).", _DEPLOYMENT, _TPOT_BUCKETS_S))
        self.in_flight = self._tally(GaugeReading(
            "meridian_in_flight_requests", "Requests in flight to a deployment.", _DEPLOYMENT))
        self.breaker_state = Gauge(
            "meridian_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            _DEPLOYMENT, registry=r)
        self.breaker_transitions = Counter(
            "meridian_breaker_transitions", "Circuit breaker transitions.",
            (*_DEPLOYMENT, "from_state", "to_state"), registry=r)
        self.breaker_trips_held = Counter(
            "meridian_breaker_trips_held", "Breakers that would have opened but stayed closed: as many of the "
            "model's deployments as max_ejection_percent allows were already out.", _DEPLOYMENT, registry=r)
        self.panic_routed = Counter(
            "meridian_panic_routed", "Requests sent to the least bad deployment because every deployment of the "
            "model was excluded.", ("region", "model", "deployment"), registry=r)
        self.trials = Counter(
            "meridian_trials", "Requests put first to try a deployment that was half-open or had no recent answer.",
            ("region", "model", "deployment"), registry=r)
        self.health_state = Gauge(
            "meridian_deployment_healthy", "1 when active health checks consider the deployment healthy.",
            _DEPLOYMENT, registry=r)
        self.fallbacks = Counter(
            "meridian_fallbacks", "Attempts abandoned for the next candidate, by the failure.",
            (*_DEPLOYMENT, "reason"), registry=r)
        self.stream_resumes = Counter(
            "meridian_stream_resumes", "Streams cut by this deployment after their first byte and continued on "
            "another, by why the stream counted as cut.", (*_DEPLOYMENT, "reason"), registry=r)
        self.cache = Counter(
            "meridian_cache_requests", "Response cache lookups.", ("region", "model", "result"), registry=r)
        self.tokens = self._tally(CounterTally(
            "meridian_tokens", "Tokens processed; source is 'reported' or 'estimated'.",
            (*_DEPLOYMENT, "kind", "source")))
        self.cost = self._tally(CounterTally(
            "meridian_cost_dollars", "Cost of requests from token usage and deployment prices.", _DEPLOYMENT))
        self.engine_requests_running = Gauge(
            "meridian_engine_requests_running", "Requests the deployment's engine is generating, as its own metrics "
            "page says (local deployments this router scrapes).", _DEPLOYMENT, registry=r)
        self.engine_requests_waiting = Gauge(
            "meridian_engine_requests_waiting", "Requests queued in the deployment's engine for a slot or KV-cache "
            "space.", _DEPLOYMENT, registry=r)
        self.engine_kv_cache_usage = Gauge(
            "meridian_engine_kv_cache_usage", "Fraction 0..1 of the engine's KV cache in use.", _DEPLOYMENT,
            registry=r)
        self.engine_generation_tokens_per_second = Gauge(
            "meridian_engine_generation_tokens_per_second", "Output tokens per second the engine generated between "
            "two scrapes.", _DEPLOYMENT, registry=r)
        self.engine_scrape_errors = Counter(
            "meridian_engine_scrape_errors", "Failed scrapes of an engine's metrics page: unreachable (connection "
            "error, timeout) or status (an answer other than 2xx or 404).", ("region", "deployment", "reason"),
            registry=r)
        # Per client only as `auth.metric_client` labels it: one series per configured key, `anonymous` for
        # every address-based identity (addresses are unbounded, and would make the series so).
        self.client_cost = self._tally(CounterTally(
            "meridian_client_cost_usd", "Cost of a client's requests from token usage and the serving "
            "deployment's prices; client is its key's digest (key-...), or 'anonymous' without client keys.",
            ("region", "model", "client")))
        self.table_version = Gauge(
            "meridian_table_version", "Version of the routing table in force.", ("region", "source"),
            registry=r)
        self.table_age = Gauge(
            "meridian_table_age_seconds", "Age of the routing table in force.", ("region",), registry=r)
        self.queue_depth = Gauge(
            "meridian_queue_depth", "Requests waiting for a free deployment of the model.", ("region", "model"),
            registry=r)
        self.queue_wait = Histogram(
            "meridian_queue_wait_seconds", "Time requests spent in the model's queue, admitted or not.",
            ("region", "model"), buckets=_QUEUE_WAIT_BUCKETS_S, registry=r)
        self.queue_rejected = Counter(
            "meridian_queue_rejected", "503s of busy models: queue_full, queue_timeout, or all_deployments_busy "
            "(no queue).", ("region", "model", "reason"), registry=r)
        self.rate_limited = Counter(
            "meridian_rate_limited", "Rate limit refusals: scope 'client' is a 429, 'deployment' a deployment "
            "passed over.", ("region", "model", "scope"), registry=r)
        self.background_restarts = Counter(
            "meridian_background_restarts", "Background loops (health checks, shared limits, telemetry, jobs) "
            "started again after an unexpected exception, logged as background_loop_failed.", ("region", "loop"),
            registry=r)
        self.request_body_bytes_held = self._tally(GaugeReading(
            "meridian_request_body_bytes_held", "Bytes of request bodies held, from the first byte read to the "
            "answer (request_bodies.in_flight_bytes caps it).", ("region",)))
        self.request_bodies_refused = Counter(
            "meridian_request_bodies_refused", "Request bodies refused before they were parsed: too_large (413), "
            "over_budget (503), read_timeout (408).", ("region", "reason"), registry=r)
        self.unhandled_errors = Counter(
            "meridian_unhandled_errors", "Requests that failed on an unexpected exception (500), by its type; "
            "their tracebacks are logged at most once per interval per type.", ("region", "exception"), registry=r)
        self.decision_time = self._tally(HistogramTally(
            "meridian_decision_seconds", "Time to take a routing decision.", ("region", "policy"), _DECISION_BUCKETS_S))
