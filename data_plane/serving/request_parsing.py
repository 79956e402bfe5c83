"""Turns an HTTP request into the plain values the router decides on, refusing bad input with the
status and OpenAI error a client can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from data_plane.errors import ClientError
from data_plane.policies import RouteRequest
from data_plane.serving.usage import estimate_tokens, prompt_text
from data_plane.table.snapshot import ModelSpec
from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS

POLICY_HEADER = "x-meridian-policy"
BUDGET_HEADER = "x-latency-budget-ms"
PRIORITY_HEADER = "x-meridian-priority"

# The field each endpoint cannot do without.
REQUIRED_FIELD = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: str
    body: dict[str, Any]
    model: str
    streaming: bool
    prompt: str
    max_output_tokens: int | None  # max_completion_tokens or max_tokens; None when the request sets neither


async def read_json_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > max_bytes:
        raise ClientError(413, f"request body of {request.content_length} bytes is over the limit of "
                          f"{max_bytes} bytes", code="request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise ClientError(413, f"request body is over the limit of {max_bytes} bytes",
                          code="request_too_large") from error
    if len(raw) > max_bytes:
        raise ClientError(413, f"request body of {len(raw)} bytes is over the limit of {max_bytes} bytes",
                          code="request_too_large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ClientError(400, f"request body is not valid JSON: {error}", code="invalid_json") from error
    if not isinstance(body, dict):
        raise ClientError(400, "request body must be a JSON object", code="invalid_json")
    return body


def parse_openai_request(endpoint: str, body: dict[str, Any]) -> ParsedRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError(400, "you must provide a model parameter", param="model", code="missing_model")
    required = REQUIRED_FIELD[endpoint]
    value = body.get(required)
    if value is None or (endpoint == "chat/completions" and (not isinstance(value, list) or not value)):
        raise ClientError(400, f"'{required}' is a required property", param=required,
                          code="missing_required_parameter")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    prompt = prompt_text(body)
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        streaming=bool(body.get("stream")),
        prompt=prompt,
        max_output_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
    )


def route_request_from(
    parsed: ParsedRequest, model: ModelSpec, headers: CIMultiDictProxy[str], typical_output_tokens: int
) -> RouteRequest:
    """The request as `model` routes it; `typical_output_tokens` is the answer length expected when the
    request sets no max_tokens."""
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
        estimated_input_tokens=estimate_tokens(parsed.prompt),
        expected_output_tokens=parsed.max_output_tokens or typical_output_tokens,
        local_ratio=model.local_ratio,
        score_weights=model.score_weights,
        locality_margin=model.locality_margin,
    )
