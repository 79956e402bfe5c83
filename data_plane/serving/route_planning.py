"""Which deployments a request may go to, in order: the model's own decision, then its fallback
models' decisions. Pure over the router's state; the forwarder walks the result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from data_plane.deployments.prefix_index import prompt_blocks
from data_plane.errors import ClientError
from data_plane.live_state import RouterState
from data_plane.policies import Decision, RouteRequest, decide
from data_plane.serving.request_parsing import route_request_from
from data_plane.serving.request_shapes import ParsedRequest
from data_plane.table.snapshot import DeploymentSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class ModelDecision:
    model: ModelSpec
    request: RouteRequest
    decision: Decision
    decision_s: float


def model_chain(state: RouterState, parsed: ParsedRequest, headers: CIMultiDictProxy[str]
                ) -> list[tuple[ModelSpec, RouteRequest]]:
    """The requested model and then its fallbacks, each with the request as that model sees it."""
    models = state.table.models
    now = time.monotonic()
    primary = models.get(parsed.model)
    if primary is None:
        raise ClientError(404, f"the model {parsed.model!r} does not exist; available models: "
                          f"{', '.join(sorted(models))}", param="model", code="model_not_found")
    affinity = state.prefix_affinity
    blocks = prompt_blocks(parsed.prompt_parts, affinity.block_chars, affinity.max_blocks) if affinity.enabled else ()
    chain = [(primary, route_request_from(parsed, primary, headers, state.typical_output_tokens(primary, now),
                                          blocks))]
    for name in primary.fallbacks:
        fallback = models.get(name)
        if fallback is not None:
            chain.append((fallback, route_request_from(parsed, fallback, headers,
                                                       state.typical_output_tokens(fallback, now), blocks)))
    return chain


def decide_model(state: RouterState, model: ModelSpec, request: RouteRequest, now: float) -> ModelDecision:
    started = time.perf_counter()
    decision = decide(state.candidates(model, now, request.estimated_input_tokens, request.prefix_blocks), request,
                      state.policy_states[model.name], state.rng)
    return ModelDecision(model, request, decision, time.perf_counter() - started)


def attempts(state: RouterState, chain: list[tuple[ModelSpec, RouteRequest]]
             ) -> Iterator[tuple[ModelDecision, DeploymentSpec | None]]:
    """Every (decision, deployment) in preference order; a fallback model is decided only when reached,
    on the statistics of that moment. A model with no eligible deployment yields (decision, None), so the
    walker learns why (a saturated model is worth waiting for)."""
    for model, request in chain:
        model_decision = decide_model(state, model, request, time.monotonic())
        if not model_decision.decision.ordered:
            yield model_decision, None
        for deployment in model_decision.decision.ordered:
            yield model_decision, deployment


def decision_json(model_decision: ModelDecision) -> dict[str, Any]:
    decision = model_decision.decision
    return {
        "model": model_decision.model.name,
        "policy": decision.policy,
        "pick": decision.ordered[0].name if decision.ordered else None,
        "order": [d.name for d in decision.ordered],
        "reason": decision.reason,
        "panic": decision.panic,
        "trial": decision.trial,
        "decision_us": round(model_decision.decision_s * 1e6, 2),
        "candidates": [
            {
                "name": f.name, "region": f.region, "eligible": f.eligible,
                "excluded_because": None if f.exclusion is None else str(f.exclusion),
                "latency_ms": round(f.latency_ms, 3), "ttft_ms": round(f.ttft_ms, 3), "tpot_ms": round(f.tpot_ms, 3),
                "predicted_ms": round(f.predicted_ms, 3), "estimate": f.estimate,
                "cached_prompt_tokens": f.cached_prompt_tokens, "cost": f.cost,
                "load": round(f.load, 4), "quality": f.quality,
                "score": None if f.score is None else round(f.score, 4), "in_flight": f.in_flight,
                "breaker": f.breaker,
            }
            for f in decision.figures
        ],
    }
