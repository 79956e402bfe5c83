"""One tick of the leader: merged telemetry, the catalog and the policy document in, one routing table per
region out, plus the state the next tick damps against. No I/O and no clock: `now` is passed in.

Each region's table lists every logical model with every deployment of every region; remote ones carry the
RTT in `added_latency_ms`, every deployment its merged median TTFT and TPOT and its engine's latest figures, and
every route the answer length routers assume. version and epoch stay 0: the shell stamps them from its fenced
etcd write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from control_plane.config import ControlPlaneConfig
from control_plane.policy.effective import (
    PolicyKey,
    effective_route,
    ejection_thresholds,
    fixed_weights,
    policy_index,
)
from control_plane.tables.ejection import PROBING_REASON, DeploymentHealth, Health, keep_one, next_health
from control_plane.tables.weights import (
    ScoreInput,
    bounded_shares,
    carried_over,
    damped,
    normalised,
    published,
    share_bounds,
    smoothing_factor,
    target_scores,
)
from control_plane.telemetry.merge import MergedStats, StatsKey
from meridian_common.engine_figures import EngineFigures, InvalidEngineFigures
from meridian_common.table_hash import content_hash
from meridian_proto import policy_pb2, routing_pb2

SOURCE = "control-plane"
FIXED_REASON = "operator-fixed weight"
DERIVED_REASON = ("weight from predicted latency (TTFT + TPOT x typical output tokens + engine queue wait + RTT), "
                  "KV-cache pressure and error rate")
UNWEIGHTED_REASON = "catalog weight 0: not in the weighted split"
MATERIAL_WEIGHT_CHANGE = 0.05
MATERIAL_LOAD_CHANGE = 0.25  # of EngineFigures.load, 0..1
SATURATION_REFRESH_MS = 5000  # a saturated engine's figures are republished at least this often


@dataclass(frozen=True, slots=True)
class ModelState:
    """What one (region, model) carries from tick to tick. Shares are over the weighted deployments."""

    smoothed: Mapping[str, float]
    published: Mapping[str, float]
    health: Mapping[str, DeploymentHealth]


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class ComputeState:
    computed_at: float | None = None
    """`now` of the tick that produced this state; None before the first tick."""
    models: Mapping[PolicyKey, ModelState] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_tables(cls, tables: Mapping[str, routing_pb2.RoutingTable], now: float) -> ComputeState:
        """A state resuming from published tables, so that a new leader damps from its predecessor's weights
        instead of starting afresh. Ejected deployments restart their probe clock at `now`."""
        models: dict[PolicyKey, ModelState] = {}
        computed_at: float | None = None
        for region, table in tables.items():
            if table.computed_at_unix_ms:
                computed_at = max(computed_at or 0.0, table.computed_at_unix_ms / 1000)
            for route in table.models:
                # Tables carry medians, not the p95s a verdict saw: they only rank an ejection resumed here
                # against others that were out of service too (keep_one prefers those that were in service).
                health = {
                    d.name: DeploymentHealth(Health.EJECTED, now, d.reason, d.error_rate, d.ttft_ms, d.tpot_ms)
                    if d.ejected else DeploymentHealth(Health.ACTIVE, now)
                    for d in route.deployments
                }
                weighted = {d.name: d.weight for d in route.deployments if not d.ejected and d.weight > 0}
                shares = _frozen(normalised(weighted)) if weighted else _frozen({})
                models[(region, route.model)] = ModelState(shares, shares, MappingProxyType(health))
        return cls(computed_at, MappingProxyType(models))


def _enough(stats: MergedStats | None, minimum: int) -> MergedStats | None:
    return stats if stats is not None and stats.requests >= minimum else None


def typical_output_tokens(
    route: routing_pb2.ModelRoute, stats: Mapping[StatsKey, MergedStats], minimum: int
) -> int:
    """The mean answer length over every deployment of the route's model, once `minimum` successful answers
    were seen; until then the catalog's value already in the route."""
    seen = [s for d in route.deployments if (s := stats.get((route.model, d.name))) is not None]
    answers = sum(s.successes for s in seen)
    output_tokens = sum(s.output_tokens for s in seen)
    # No tokens at all means the routers could not count them, not answers of no tokens.
    if answers < minimum or output_tokens == 0:
        return route.typical_output_tokens
    return max(1, round(output_tokens / answers))


def _route(
    config: ControlPlaneConfig,
    region: str,
    model: str,
    entry: policy_pb2.ModelPolicy | None,
    stats: Mapping[StatsKey, MergedStats],
    previous: ModelState | None,
    fraction: float | None,
    now: float,
) -> tuple[routing_pb2.ModelRoute, ModelState]:
    settings = config.compute
    route = effective_route(config, region, model, entry)
    route.typical_output_tokens = typical_output_tokens(route, stats, settings.min_requests_for_weight)
    thresholds = ejection_thresholds(entry, settings)
    before = previous.health if previous is not None else {}
    healths = keep_one(
        {
            d.name: next_health(before.get(d.name, DeploymentHealth(since=now)), stats.get((model, d.name)),
                                thresholds, settings, now)
            for d in route.deployments
        },
        before,
        thresholds,
    )
    active = [d for d in route.deployments if healths[d.name].state is Health.ACTIVE]
    probing = [d.name for d in route.deployments if healths[d.name].state is Health.PROBING]

    fixed = fixed_weights(entry)
    fixed_active = {d.name: fixed[d.name] for d in active if fixed and fixed.get(d.name, 0.0) > 0}
    if fixed_active:
        # Operator intent, not a feedback loop: applied at once, without damping, floor or cap.
        smoothed = shown = normalised(fixed_active)
    else:
        weighted = [d for d in active if d.weight > 0] or active
        minimum = settings.min_requests_for_weight
        inputs = {}
        for d in weighted:
            seen = stats.get((model, d.name))
            trusted = _enough(seen, minimum)
            # Each figure on the answers that measured it: TPOT needs answers of two tokens or more.
            inputs[d.name] = ScoreInput(
                prior=d.weight or 1.0,
                ttft_ms=seen.ttft_p50_ms if seen and seen.ttft.count >= minimum else None,
                tpot_ms=seen.tpot_p50_ms if seen and seen.tpot.count >= minimum else None,
                error_rate=trusted.error_rate if trusted else 0.0,
                added_latency_ms=d.added_latency_ms,
                engine=seen.engine if seen else None,
            )
        floor, cap = share_bounds(len(inputs), settings)
        target = bounded_shares(target_scores(inputs, route.typical_output_tokens, settings), floor, cap)
        if previous is None or fraction is None or not target:
            smoothed = shown = target
        else:
            # A deployment coming back from its probe starts at the probe weight, not at its full target.
            starts = {
                name: settings.probe_weight if before.get(name, DeploymentHealth()).state is Health.PROBING
                else share
                for name, share in target.items()
            }
            smoothed = damped(carried_over(previous.smoothed, starts, floor, cap), target, fraction,
                              settings.max_weight_step)
            shown = published(carried_over(previous.published, starts, floor, cap), smoothed,
                              settings.weight_hysteresis, settings.max_weight_step)

    probe_total = 0.0
    if probing:
        probe_total = 1.0 if not shown else min(settings.probe_weight * len(probing), 0.5)
    for deployment in route.deployments:
        health = healths[deployment.name]
        seen = stats.get((model, deployment.name))
        deployment.ttft_ms = seen.ttft_p50_ms if seen else 0.0
        deployment.tpot_ms = seen.tpot_p50_ms if seen else 0.0
        deployment.error_rate = seen.error_rate if seen else 0.0
        if seen is not None and seen.engine is not None:
            deployment.engine.CopyFrom(seen.engine.to_proto())
        if health.state is Health.EJECTED:
            deployment.weight, deployment.ejected, deployment.reason = 0.0, True, health.reason
        elif health.state is Health.PROBING:
            deployment.weight, deployment.reason = probe_total / len(probing), PROBING_REASON
        elif deployment.name in shown:
            deployment.weight = shown[deployment.name] * (1.0 - probe_total)
            deployment.reason = health.reason or (FIXED_REASON if fixed_active else DERIVED_REASON)
        else:
            deployment.weight, deployment.reason = 0.0, health.reason or UNWEIGHTED_REASON
    return route, ModelState(_frozen(smoothed), _frozen(shown), MappingProxyType(healths))


def compute_tables(
    config: ControlPlaneConfig,
    policy: policy_pb2.PolicyDocument,
    stats: Mapping[StatsKey, MergedStats],
    previous: ComputeState,
    now: float,
) -> tuple[dict[str, routing_pb2.RoutingTable], ComputeState]:
    """The tables of every catalog region at `now` (unix seconds) and the state for the next tick.

    `policy` is assumed valid against `config` (see policy_document.validate_policy_document).
    """
    entries = policy_index(policy)
    fraction = None if previous.computed_at is None else smoothing_factor(now - previous.computed_at,
                                                                          config.compute)
    tables: dict[str, routing_pb2.RoutingTable] = {}
    states: dict[PolicyKey, ModelState] = {}
    for region in sorted(config.regions):
        routes = []
        for model in sorted(config.models):
            key = (region, model)
            route, states[key] = _route(config, region, model, entries.get(key), stats,
                                        previous.models.get(key), fraction, now)
            routes.append(route)
        tables[region] = routing_pb2.RoutingTable(
            region=region,
            content_hash=content_hash(routes),
            computed_at_unix_ms=round(now * 1000),
            models=routes,
            source=SOURCE,
        )
    return tables, ComputeState(now, MappingProxyType(states))


def _skeleton(table: routing_pb2.RoutingTable) -> bytes:
    """The table without its stamps and live figures: what must be equal for a change to be immaterial."""
    copy = routing_pb2.RoutingTable()
    copy.CopyFrom(table)
    copy.version = copy.epoch = copy.computed_at_unix_ms = 0
    copy.content_hash = ""
    for route in copy.models:
        route.typical_output_tokens = 0
        for deployment in route.deployments:
            deployment.weight = deployment.ttft_ms = deployment.tpot_ms = deployment.error_rate = 0.0
            deployment.ClearField("engine")
    return copy.SerializeToString(deterministic=True)


def _served_shares(route: routing_pb2.ModelRoute) -> dict[str, float]:
    serving = {d.name: max(d.weight, 0.0) for d in route.deployments if not d.ejected}
    total = sum(serving.values())
    return {name: (w / total if total > 0 else 0.0) for name, w in serving.items()}


def _engine(deployment: routing_pb2.Deployment) -> EngineFigures | None:
    if not deployment.HasField("engine"):
        return None
    try:
        return EngineFigures.from_proto(deployment.engine)
    except InvalidEngineFigures:
        return None


def _engine_moved(before: routing_pb2.ModelRoute, after: routing_pb2.ModelRoute) -> bool:
    """Whether some deployment's engine crossed the model's saturation thresholds either way, its load moved
    more than `MATERIAL_LOAD_CHANGE`, or it is saturated and the published figures are `SATURATION_REFRESH_MS`
    older than the new ones (routers stop trusting table figures after a while, and a remote region must keep
    seeing a saturated engine as such)."""
    limits = after.saturation
    old_engines = {d.name: _engine(d) for d in before.deployments}
    for deployment in after.deployments:
        new, old = _engine(deployment), old_engines.get(deployment.name)
        if new is None:
            continue
        saturated = new.saturation(limits.max_requests_waiting, limits.max_kv_cache_usage) is not None
        if old is None:
            if saturated:
                return True
            continue
        was_saturated = old.saturation(limits.max_requests_waiting, limits.max_kv_cache_usage) is not None
        if saturated != was_saturated:
            return True
        if abs(new.load(limits.max_requests_waiting) - old.load(limits.max_requests_waiting)) > MATERIAL_LOAD_CHANGE:
            return True
        if saturated and new.observed_at_unix_ms - old.observed_at_unix_ms >= SATURATION_REFRESH_MS:
            return True
    return False


def changed_materially(
    old: routing_pb2.RoutingTable | None,
    new: routing_pb2.RoutingTable,
    *,
    weight_threshold: float = MATERIAL_WEIGHT_CHANGE,
) -> bool:
    """Whether `new` is worth publishing over `old`: anything but the live figures (weights, TTFT, TPOT, error
    rates, typical output tokens, engine figures) changed (policy, limits, deployments, ejections, reasons), a
    weight moved more than `weight_threshold` once normalised over the deployments in service, or an engine's
    figures moved materially (`_engine_moved`)."""
    if old is None or _skeleton(old) != _skeleton(new):
        return True
    for before, after in zip(old.models, new.models, strict=True):
        old_shares, new_shares = _served_shares(before), _served_shares(after)
        if any(abs(new_shares[name] - old_shares[name]) > weight_threshold for name in new_shares):
            return True
        if _engine_moved(before, after):
            return True
    return False
