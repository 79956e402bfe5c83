"""Which deployments a request may go to, in order: the model's own decision, then its fallback
models' decisions. Pure over the router's state; the forwarder walks the result."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from data_plane.deployments.prefix_index import prompt_blocks
from data_plane.errors import ClientError
from data_plane.live_state import RouterState
from data_plane.policies import Decision, RouteRequest, decide
from data_plane.policies.filters import context_exclusion
from data_plane.serving.request_parsing import route_request_from
from data_plane.serving.request_shapes import ParsedRequest
from data_plane.table.snapshot import DeploymentSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class ModelDecision:
    model: ModelSpec
    request: RouteRequest
    decision: Decision
    decision_s: float


def model_named(models: Mapping[str, ModelSpec], name: str) -> ModelSpec:
    """The table's model `name`, or 404 `model_not_found` naming those there are."""
    model = models.get(name)
    if model is None:
        raise ClientError(404, f"the model {name!r} does not exist; available models: {', '.join(sorted(models))}",
                          param="model", code="model_not_found")
    return model


def model_chain(state: RouterState, parsed: ParsedRequest, headers: CIMultiDictProxy[str]
                ) -> list[tuple[ModelSpec, RouteRequest]]:
    """The requested model and then its fallbacks, each with the request as that model sees it."""
    models = state.table.models
    now = time.monotonic()
    primary = model_named(models, parsed.model)
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


def refuse_too_long(chain: list[tuple[ModelSpec, RouteRequest]], prompt_field: str) -> None:
    """400 `context_length_exceeded` when the request fits the context window of no deployment of the model or
    its fallbacks (a deployment without a declared window fits any): no wait and no other deployment would
    change that, so it is not a 503. The prompt's tokens are estimated, about four characters a token."""
    request = chain[0][1]
    windows = [spec.context_window for model, _ in chain for spec in model.deployments]
    if not windows or not all(context_exclusion(window, request.context_tokens) for window in windows):
        return
    asked = f"{request.estimated_input_tokens} in the {prompt_field}"
    if request.requested_output_tokens:
        asked += f", {request.requested_output_tokens} in the completion"
    raise ClientError(400, f"This model's maximum context length is {max(windows)} tokens. However, you requested "
                      f"about {request.context_tokens} tokens ({asked}; the {prompt_field} estimated at about four "
                      f"characters a token). Please reduce the length of the {prompt_field} or completion.",
                      param=prompt_field, code="context_length_exceeded")


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
