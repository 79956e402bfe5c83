"""What a router knows right now: the table snapshot in force and, per deployment, its live statistics,
circuit breaker and health. Applying a new table swaps the snapshot in one assignment and keeps the live
state of deployments that are still there."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from data_plane.breaker import CircuitBreaker, Transition
from data_plane.config import HealthCheckConfig
from data_plane.health import DeploymentHealth
from data_plane.policies import Candidate, PolicyState
from data_plane.rate_limits import Limits, RateLimits
from data_plane.stats import DeploymentStats
from data_plane.table import DeploymentSpec, ModelSpec, TableSnapshot

DeploymentKey = tuple[str, str]
"""(logical model, deployment name)"""


@dataclass(slots=True)
class LiveDeployment:
    spec: DeploymentSpec
    model: str
    stats: DeploymentStats
    breaker: CircuitBreaker
    health: DeploymentHealth


@dataclass(slots=True)
class RouterState:
    region: str
    health_settings: HealthCheckConfig
    stats_window_s: float
    table: TableSnapshot
    applied_at: float = field(default_factory=time.monotonic)
    live: dict[DeploymentKey, LiveDeployment] = field(default_factory=dict)
    policy_states: dict[str, PolicyState] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    on_apply: list[Callable[[TableSnapshot], None]] = field(default_factory=list)
    rate_limits: RateLimits | None = None

    def __post_init__(self) -> None:
        self.apply(self.table)

    def apply(self, table: TableSnapshot) -> None:
        live: dict[DeploymentKey, LiveDeployment] = {}
        for model in table.models.values():
            for spec in model.deployments:
                key = (model.name, spec.name)
                previous = self.live.get(key)
                if previous is not None and previous.breaker.settings == model.breaker:
                    previous.spec = spec
                    live[key] = previous
                else:
                    live[key] = LiveDeployment(
                        spec=spec,
                        model=model.name,
                        stats=previous.stats if previous else DeploymentStats(window_s=self.stats_window_s),
                        breaker=CircuitBreaker(spec.name, model.breaker),
                        health=previous.health if previous else DeploymentHealth(
                            healthy_after=self.health_settings.healthy_after,
                            unhealthy_after=self.health_settings.unhealthy_after,
                        ),
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

    def candidates(self, model: ModelSpec, now: float, tokens: int = 0) -> list[Candidate]:
        """`tokens`: the request's prompt estimate, which a deployment's tpm must still cover."""
        result = []
        limits = self.rate_limits
        for spec in model.deployments:
            entry = self.live[(model.name, spec.name)]
            result.append(Candidate(
                deployment=spec,
                stats=entry.stats.view(now),
                breaker_state=entry.breaker.state_at(now),
                healthy=entry.health.healthy,
                local=spec.region == self.region,
                rate_limited=limits.deployment_block(model.name, spec.name, tokens, now)
                if limits is not None and (spec.rpm_limit or spec.tpm_limit) else None,
            ))
        return result


BreakerListener = Callable[[LiveDeployment, Transition], None]
