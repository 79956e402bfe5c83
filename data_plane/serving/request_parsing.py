"""Turns an HTTP request into the plain values the router decides on, refusing bad input with the
status and OpenAI error a client can act on."""

from __future__ import annotations

from multidict import CIMultiDictProxy

from data_plane.errors import ClientError
from data_plane.policies import RouteRequest
from data_plane.serving.request_shapes import InvalidRequest, ParsedRequest, parse_request
from data_plane.table.snapshot import ModelSpec
from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS

POLICY_HEADER = "x-meridian-policy"
BUDGET_HEADER = "x-latency-budget-ms"
PRIORITY_HEADER = "x-meridian-priority"

def parse_openai_request(endpoint: str, received: bytes | bytearray) -> ParsedRequest:
    """The request for `endpoint` whose body is `received`; a 400 in OpenAI's shape when the body is not JSON or a
    field the router reads does not have OpenAI's shape (data_plane/serving/request_shapes.py)."""
    try:
        return parse_request(endpoint, received)
    except InvalidRequest as error:
        raise ClientError(400, error.message, param=error.param, code=error.code) from error


def route_request_from(
    parsed: ParsedRequest, model: ModelSpec, headers: CIMultiDictProxy[str], typical_output_tokens: int,
    prefix_blocks: tuple[int, ...] = (),
) -> RouteRequest:
    """The request as `model` routes it; `typical_output_tokens` is the answer length expected when the
    request sets no max_tokens; `prefix_blocks` the hashes of its prompt's leading blocks."""
    policy = headers.get(POLICY_HEADER, model.policy)
    if policy not in POLICIES:
        raise ClientError(400, f"unknown policy {policy!r} in {POLICY_HEADER}; expected one of "
                          f"{', '.join(POLICIES)}", param=POLICY_HEADER, code="invalid_policy")
    if policy != model.policy and model.allowed_policies and policy not in model.allowed_policies:
        raise ClientError(400, f"policy {policy!r} is not allowed for model {model.name!r}; allowed: "
                          f"{', '.join(model.allowed_policies)}", param=POLICY_HEADER, code="policy_not_allowed")
    budget_text = headers.get(BUDGET_HEADER)
    budget_ms = model.latency_budget_ms
    if budget_text is not None:
        try:
            budget_ms = float(budget_text)
        except ValueError:
            budget_ms = -1.0
        if not budget_ms >= 0:
            raise ClientError(400, f"{BUDGET_HEADER} must be a non-negative number of milliseconds, got "
                              f"{budget_text!r}", param=BUDGET_HEADER, code="invalid_latency_budget")
    priority = headers.get(PRIORITY_HEADER, model.priority)
    if priority not in PRIORITY_PRESETS:
        raise ClientError(400, f"unknown priority {priority!r} in {PRIORITY_HEADER}; expected one of "
                          f"{', '.join(PRIORITY_PRESETS)}", param=PRIORITY_HEADER, code="invalid_priority")
    return RouteRequest(
        model=model.name,
        policy=policy,
        latency_budget_ms=budget_ms,
        priority=priority,
        streaming=parsed.streaming,
        estimated_input_tokens=parsed.estimated_prompt_tokens,
        expected_output_tokens=parsed.max_output_tokens or typical_output_tokens,
        local_ratio=model.local_ratio,
        score_weights=model.score_weights,
        locality_margin=model.locality_margin,
        max_requests_waiting=model.saturation.max_requests_waiting,
        max_kv_cache_usage=model.saturation.max_kv_cache_usage,
        prefix_blocks=prefix_blocks,
        requested_output_tokens=parsed.max_output_tokens or 0,
    )
