"""A readable diff of routing tables, per region and model: what a dry run of a policy change would change.

Weights are shown to three decimals so that the noise of live figures does not bury the policy's effect; the
other live figures (TTFT, TPOT, error rates, engine figures) are not shown at all: a policy does not change them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from meridian_proto import routing_pb2


def _deployment_line(deployment: routing_pb2.Deployment) -> str:
    where = deployment.region
    if deployment.added_latency_ms:
        where += f" +{deployment.added_latency_ms:g} ms"
    if deployment.ejected:
        state = f"EJECTED ({deployment.reason})"
    else:
        state = f"weight {deployment.weight:.3f}"
    limits = ""
    if deployment.rpm_limit or deployment.tpm_limit:
        limits = f" rpm {deployment.rpm_limit} tpm {deployment.tpm_limit}"
    return f"deployment {deployment.name} [{where}]: {state}{limits}"


def render_route(route: routing_pb2.ModelRoute | None) -> list[str]:
    """The lines a diff compares for one model of one region (empty when the model is absent)."""
    if route is None:
        return []
    lines = [f"policy: {route.policy}"]
    if route.allowed_policies:
        lines.append(f"allowed_policies: {', '.join(route.allowed_policies)}")
    lines += [
        f"latency_budget_ms: {route.latency_budget_ms:g}",
        f"priority: {route.priority}",
        f"local_ratio: {route.local_ratio:g}",
    ]
    if route.HasField("score_weights"):
        weights = route.score_weights
        lines.append(f"score_weights: latency {weights.latency:g} cost {weights.cost:g} quality {weights.quality:g} "
                     f"load {weights.load:g}")
    if route.HasField("client_limits"):
        lines.append(f"client_limits: rpm {route.client_limits.rpm} tpm {route.client_limits.tpm}")
    if route.fallbacks:
        lines.append(f"fallbacks: {', '.join(route.fallbacks)}")
    lines += [_deployment_line(d) for d in route.deployments]
    return lines


def table_diff(
    old_tables: Mapping[str, routing_pb2.RoutingTable], new_tables: Mapping[str, routing_pb2.RoutingTable]
) -> str:
    """A unified-style diff, one `@@ region / model @@` hunk per changed model, in name order; "no changes"
    when the tables route the same way."""
    hunks: list[str] = []
    for region in sorted(set(old_tables) | set(new_tables)):
        old_routes = {r.model: r for r in old_tables[region].models} if region in old_tables else {}
        new_routes = {r.model: r for r in new_tables[region].models} if region in new_tables else {}
        for model in sorted(set(old_routes) | set(new_routes)):
            before, after = render_route(old_routes.get(model)), render_route(new_routes.get(model))
            if before == after:
                continue
            hunks.append(f"@@ {region} / {model} @@")
            # Full context inside a model: a hunk reads as the whole model, changed lines marked.
            body = list(difflib.unified_diff(before, after, lineterm="", n=len(before) + len(after)))
            hunks += body[3:]
    if not hunks:
        return "no changes"
    return "\n".join(["--- current", "+++ proposed", *hunks])
