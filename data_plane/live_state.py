"""What a router knows right now: the table snapshot in force and, per deployment, its live statistics,
circuit breaker and health. Applying a new table swaps the snapshot in one assignment and keeps the live
state of deployments that are still there."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from data_plane.config import EngineMetricsConfig, HealthCheckConfig, PrefixAffinityConfig, StatisticsConfig
from data_plane.deployments.breaker import BreakerState, CircuitBreaker, ejection_limit
from data_plane.deployments.health import DeploymentHealth
from data_plane.deployments.latency_model import LatencyModel, RequestSize, request_size
from data_plane.deployments.prefix_index import PrefixIndex, block_tokens
from data_plane.deployments.stats import DeploymentStats, StatsView
from data_plane.limits.rate_limits import Limits, RateLimits
from data_plane.policies import Candidate, PolicyState, TrialReason
from data_plane.table.snapshot import DeploymentSpec, ModelSpec, TableSnapshot
from meridian_common.engine_figures import EngineFigures


class EngineSource(StrEnum):
    SCRAPED = "scraped"  # this router read the engine's metrics page
    CONTROL_PLANE = "control-plane"  # merged from every router's telemetry, carried in the table


DeploymentKey = tuple[str, str]
"""(logical model, deployment name)"""
_TYPICAL_REFRESH_S = 0.1


@dataclass(slots=True)
class LiveDeployment:
    spec: DeploymentSpec
    model: str
    stats: DeploymentStats
    breaker: CircuitBreaker
    health: DeploymentHealth
    latency_model: LatencyModel
    prefixes: PrefixIndex | None  # the prompt blocks recently sent to it; None with prefix affinity off
    saturated_until: float = -math.inf  # monotonic: the backend's last 429 asked for no request before then
    misconfigured_status: int = 0  # the status of its last misconfigured answer (401, 404...); 0 once it answers
    engine: EngineFigures | None = None  # its engine's own figures, last scraped by this router
    engine_at: float = -math.inf  # monotonic: when `engine` was scraped

    def saturation(self, now: float) -> str | None:
        """Why the deployment is no candidate for its backend's Retry-After, or None."""
        if now >= self.saturated_until:
            return None
        return f"backend saturated: answered 429, no request for {self.saturated_until - now:.1f}s"

    def scraped_engine(self, now: float, stale_after_s: float) -> EngineFigures | None:
        """This router's own scrape of the engine, if not older than `stale_after_s`."""
        return self.engine if self.engine is not None and now - self.engine_at <= stale_after_s else None


@dataclass(slots=True)
class RouterState:
    region: str
    health_settings: HealthCheckConfig
    statistics: StatisticsConfig
    table: TableSnapshot
    applied_at: float = field(default_factory=time.monotonic)
    live: dict[DeploymentKey, LiveDeployment] = field(default_factory=dict)
    policy_states: dict[str, PolicyState] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    on_apply: list[Callable[[TableSnapshot], None]] = field(default_factory=list)
    rate_limits: RateLimits | None = None
    engine_metrics: EngineMetricsConfig = field(default_factory=EngineMetricsConfig)
    prefix_affinity: PrefixAffinityConfig = field(default_factory=PrefixAffinityConfig)
    # model -> (when computed, typical answer length): recomputed at most every `_TYPICAL_REFRESH_S`.
    _typical: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.apply(self.table)

    def new_stats(self) -> DeploymentStats:
        settings = self.statistics
        return DeploymentStats(window_s=settings.window_s, decay_s=settings.decay_s,
                               stale_after_s=settings.stale_after_s)

    def new_latency_model(self, architecture: str) -> LatencyModel:
        settings = self.statistics
        return LatencyModel(architecture, decay_s=settings.decay_s, stale_after_s=settings.stale_after_s)

    def new_prefix_index(self) -> PrefixIndex | None:
        settings = self.prefix_affinity
        return PrefixIndex(settings.blocks_per_deployment) if settings.enabled else None

    def apply(self, table: TableSnapshot) -> None:
        live: dict[DeploymentKey, LiveDeployment] = {}
        for model in table.models.values():
            for spec in model.deployments:
                key = (model.name, spec.name)
                previous = self.live.get(key)
                same_architecture = previous is not None and previous.spec.architecture == spec.architecture
                if previous is not None and same_architecture and previous.breaker.settings == model.breaker:
                    previous.spec = spec
                    live[key] = previous
                else:
                    live[key] = LiveDeployment(
                        spec=spec,
                        model=model.name,
                        stats=previous.stats if previous else self.new_stats(),
                        breaker=CircuitBreaker(spec.name, model.breaker),
                        latency_model=previous.latency_model if previous is not None and same_architecture
                        else self.new_latency_model(spec.architecture),
                        prefixes=previous.prefixes if previous is not None else self.new_prefix_index(),
                        health=previous.health if previous else DeploymentHealth(
                            healthy_after=self.health_settings.healthy_after,
                            unhealthy_after=self.health_settings.unhealthy_after,
                        ),
                        saturated_until=previous.saturated_until if previous else -math.inf,
                    )
        self.policy_states = {
            name: self.policy_states.get(name) or PolicyState() for name in table.models
        }
        self.live = live
        self.table = table
        self.applied_at = time.monotonic()
        if self.rate_limits is not None:
            self.rate_limits.apply(
                {m.name: Limits(m.client_rpm, m.client_tpm) for m in table.models.values()},
                {(m.name, d.name): Limits(d.rpm_limit, d.tpm_limit)
                 for m in table.models.values() for d in m.deployments},
                self.applied_at,
            )
        for callback in self.on_apply:
            callback(table)

    def candidates(self, model: ModelSpec, now: float, tokens: int = 0,
                   prefix_blocks: tuple[int, ...] = ()) -> list[Candidate]:
        """`tokens`: the request's prompt estimate, which a deployment's tpm must still cover; `prefix_blocks`:
        the hashes of its prompt's leading blocks, looked up in each deployment's prefix index."""
        result = []
        limits = self.rate_limits
        now_unix_ms = time.time() * 1000
        for spec in model.deployments:
            entry = self.live[(model.name, spec.name)]
            view = entry.stats.view(now)
            local = spec.region == self.region
            breaker_state = entry.breaker.state_at(now)
            result.append(Candidate(
                deployment=spec,
                stats=view,
                breaker_state=breaker_state,
                healthy=entry.health.healthy,
                local=local,
                rate_limited=limits.deployment_block(model.name, spec.name, tokens, now)
                if limits is not None and (spec.rpm_limit or spec.tpm_limit) else None,
                backend_saturated=entry.saturation(now),
                trial=self._trial_due(entry, breaker_state, view, local, now),
                engine=self.engine_figures(entry, now, now_unix_ms),
                latency_model=entry.latency_model.view(now),
                cached_prompt_tokens=self.cached_prompt_tokens(entry, tokens, prefix_blocks),
            ))
        return result

    def cached_prompt_tokens(self, entry: LiveDeployment, tokens: int, prefix_blocks: tuple[int, ...]) -> int:
        """How much of a prompt of `tokens` whose leading blocks are `prefix_blocks` the deployment's prefix cache
        likely holds: never all of it (the last token is always computed)."""
        if entry.prefixes is None or not prefix_blocks:
            return 0
        matched = entry.prefixes.matched(prefix_blocks)
        return min(matched * block_tokens(self.prefix_affinity.block_chars), max(0, tokens - 1))

    def send_size(self, entry: LiveDeployment, prompt_tokens: int, output_tokens: int,
                  prefix_blocks: tuple[int, ...], now: float) -> RequestSize:
        """A request as it is sent to the deployment now: what its answer will teach the size model."""
        return request_size(prompt_tokens, self.cached_prompt_tokens(entry, prompt_tokens, prefix_blocks),
                            output_tokens, self.engine_figures(entry, now, time.time() * 1000), entry.stats.in_flight)

    def engine_figures(self, entry: LiveDeployment, now: float, now_unix_ms: float) -> EngineFigures | None:
        reading = self.engine_reading(entry, now, now_unix_ms)
        return reading[0] if reading is not None else None

    def engine_reading(self, entry: LiveDeployment, now: float, now_unix_ms: float
                       ) -> tuple[EngineFigures, EngineSource] | None:
        """The engine's figures if fresh, and where they come from: this router's own scrape, else (another
        region's deployment, or one this router does not scrape) the control plane's, carried in the table."""
        settings = self.engine_metrics
        scraped = entry.scraped_engine(now, settings.stale_after_s)
        if scraped is not None:
            return scraped, EngineSource.SCRAPED
        carried = entry.spec.engine
        if carried is not None and now_unix_ms - carried.observed_at_unix_ms <= settings.table_stale_after_s * 1000:
            return carried, EngineSource.CONTROL_PLANE
        return None

    def _trial_due(self, entry: LiveDeployment, breaker_state: BreakerState, view: StatsView, local: bool,
                   now: float) -> TrialReason | None:
        """A client's request goes first to a deployment only when nothing else would refresh what is known of
        it: health probes measure TTFT and TPOT without risking anyone's request, so with them on, a recovered
        deployment is ranked first on its fresh figures and a broken one is left alone."""
        if (breaker_state is BreakerState.HALF_OPEN and not entry.breaker.trial_outstanding(now)
                and view.ttft_ms is None):
            return TrialReason.HALF_OPEN
        # A deployment that served and then lost its traffic would never show that it recovered. Only its own
        # region explores it: the control plane carries that region's figures to the others, who would otherwise
        # each pay a cross-region round trip for the same knowledge.
        if local and view.tpot_ms is None and self.statistics.stale_after_s <= view.idle_s < math.inf:
            return TrialReason.STALE
        return None

    def may_open(self, model: str, deployment: str, now: float) -> bool:
        """Whether a breaker of `model` may open now without taking more of its deployments out at once than
        its `max_ejection_percent` allows."""
        spec = self.table.models[model]
        ejected = sum(1 for d in spec.deployments if d.name != deployment
                      and self.live[(model, d.name)].breaker.state_at(now) is not BreakerState.CLOSED)
        return ejected < ejection_limit(len(spec.deployments), spec.breaker.max_ejection_percent)

    def typical_output_tokens(self, model: ModelSpec, now: float) -> int:
        """The model's mean answer length over this router's window, else the table's."""
        cached = self._typical.get(model.name)
        if cached is not None and 0.0 <= now - cached[0] < _TYPICAL_REFRESH_S:
            return cached[1]
        answers = tokens = 0
        for spec in model.deployments:
            view = self.live[(model.name, spec.name)].stats.view(now)
            answers += view.answers
            tokens += view.output_tokens
        typical = round(tokens / answers) if answers else model.typical_output_tokens
        self._typical[model.name] = (now, typical)
        return typical

