"""The policy a region applies to a logical model: the catalog's defaults overridden by the policy document.

proto3 scalars have no presence, so in a ModelPolicy an empty string, a zero or an empty list means
"keep the catalog's value"; messages (client_limits, deployment_limits, score_weights) count when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from control_plane.config import ComputeSettings, ControlPlaneConfig
from meridian_common.catalog import model_route_proto
from meridian_proto import policy_pb2, routing_pb2

PolicyKey = tuple[str, str]
"""(region, logical model)."""


@dataclass(frozen=True, slots=True)
class EjectionThresholds:
    max_error_rate: float
    max_ttft_p95_ms: float
    """0 = TTFT never ejects."""
    max_tpot_p95_ms: float
    """0 = TPOT never ejects."""


def policy_index(document: policy_pb2.PolicyDocument) -> Mapping[PolicyKey, policy_pb2.ModelPolicy]:
    """The document's entries by (region, model); a later duplicate wins (validation refuses duplicates)."""
    return MappingProxyType({(entry.region, entry.model): entry for entry in document.models})


def effective_route(
    config: ControlPlaneConfig, region: str, model: str, policy: policy_pb2.ModelPolicy | None
) -> routing_pb2.ModelRoute:
    """The route of `model` as `region` sees it, every deployment of every region included, before weights.

    Remote deployments carry the RTT between the regions in `added_latency_ms`; a deployment's URL is its
    `urls_by_region` entry for `region` when it has one.
    """
    route = model_route_proto(model, config.models[model], region)
    for deployment in route.deployments:
        deployment.added_latency_ms = config.rtt_ms(region, deployment.region)
    if policy is None:
        return route
    if policy.policy:
        route.policy = policy.policy
    if policy.allowed_policies:
        route.allowed_policies[:] = list(policy.allowed_policies)
    if policy.latency_budget_ms:
        route.latency_budget_ms = policy.latency_budget_ms
    if policy.priority:
        route.priority = policy.priority
    if policy.local_ratio:
        route.local_ratio = policy.local_ratio
    if policy.HasField("score_weights"):
        route.score_weights.CopyFrom(policy.score_weights)
    if policy.HasField("client_limits"):
        route.client_limits.CopyFrom(policy.client_limits)
    if policy.HasField("deployment_limits"):
        for deployment in route.deployments:
            if policy.deployment_limits.rpm:
                deployment.rpm_limit = policy.deployment_limits.rpm
            if policy.deployment_limits.tpm:
                deployment.tpm_limit = policy.deployment_limits.tpm
    return route


def ejection_thresholds(
    policy: policy_pb2.ModelPolicy | None, settings: ComputeSettings
) -> EjectionThresholds:
    if policy is None:
        return EjectionThresholds(settings.default_max_error_rate, 0.0, 0.0)
    return EjectionThresholds(policy.max_error_rate or settings.default_max_error_rate, policy.max_ttft_p95_ms,
                              policy.max_tpot_p95_ms)


def fixed_weights(policy: policy_pb2.ModelPolicy | None) -> Mapping[str, float] | None:
    """The operator-fixed weights of a model, or None when the control plane derives them from telemetry."""
    if policy is None or not policy.deployment_weights:
        return None
    return MappingProxyType(dict(sorted(policy.deployment_weights.items())))
