"""The admin API over HTTP/JSON (for curl and `meridian policy|status`): the same operations as the gRPC
Admin service, behind `Authorization: Bearer <token>`. Refusals are logged with the peer and the reason,
never with what was presented. `/health` is open: it reveals only the replica's id, role and addresses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from control_plane.admin.service import (
    AdminError,
    AdminService,
    ErrorKind,
    PolicyResult,
    bearer_of,
    document_json,
    token_matches,
)
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("admin_service", AdminService)
HEALTH_KEY = web.AppKey("health", Callable[[], dict[str, Any]])
METRICS_KEY = web.AppKey("metrics", Callable[[], bytes])

_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UNAUTHORIZED: 401,
}
_OPEN_PATHS = frozenset({"/health", "/metrics"})
# Fields of `POST /v1/policy/set` that are not policy fields.
_SET_CONTROL = ("region", "model", "dry_run", "author")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: AdminError) -> web.Response:
    body = {"error": {"message": error.message, "type": error.kind.value, "problems": list(error.problems)}}
    return web.json_response(body, status=_STATUS[error.kind])


def bearer_auth(*, token: str | None) -> Any:
    """Middleware factory: every path but /health needs the bearer token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _OPEN_PATHS:
            return await handler(request)
        provided = bearer_of(request.headers.get("Authorization"))
        if token_matches(provided, token):
            return await handler(request)
        reason = "no admin token configured" if not token else (
            "missing bearer token" if provided is None else "wrong bearer token")
        log.warning(event("admin_refused", transport="http", peer=request.remote or "?", method=request.method,
                          path=request.path, reason=reason))
        return error_response(AdminError(ErrorKind.UNAUTHORIZED, reason))

    return middleware


def _result_json(result: PolicyResult) -> dict[str, Any]:
    return {"applied": result.applied, "version": result.document.version,
            "document": document_json(result.document), "diff": result.table_diff or result.policy_diff,
            "table_diff": result.table_diff, "policy_diff": result.policy_diff}


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdminError(ErrorKind.INVALID, "the body must be a JSON object", (str(error),)) from error
    if not isinstance(body, dict):
        raise AdminError(ErrorKind.INVALID, "the body must be a JSON object")
    return body


async def apply_policy(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        body = await _json_body(request)
        text, dry_run, author = body.get("yaml"), _flag(body.get("dry_run", False)), str(body.get("author", ""))
        if not isinstance(text, str):
            raise AdminError(ErrorKind.INVALID, "the JSON body needs 'yaml': the policy document as a string")
    else:
        text = await request.text()
        dry_run = _flag(request.query.get("dry_run", "false"))
        author = request.headers.get("X-Meridian-Author", "")
    result = await request.app[SERVICE_KEY].apply(text, dry_run=dry_run, author=author)
    return web.json_response(_result_json(result))


async def set_policy(request: web.Request) -> web.Response:
    body = await _json_body(request)
    region, model = body.get("region"), body.get("model")
    if not isinstance(region, str) or not isinstance(model, str) or not region or not model:
        raise AdminError(ErrorKind.INVALID, "region and model are required", ("give 'region' and 'model'",))
    changes = {k: v for k, v in body.items() if k not in _SET_CONTROL}
    result = await request.app[SERVICE_KEY].set_fields(
        region, model, changes, dry_run=_flag(body.get("dry_run", False)), author=str(body.get("author", "")))
    return web.json_response(_result_json(result))


async def show_policy(request: web.Request) -> web.Response:
    return web.json_response(document_json(await request.app[SERVICE_KEY].show()))


async def policy_history(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "0"))
    except ValueError as error:
        raise AdminError(ErrorKind.INVALID, "limit must be a whole number") from error
    documents = await request.app[SERVICE_KEY].history(limit)
    return web.json_response({"documents": [document_json(d) for d in documents]})


async def rollback_policy(request: web.Request) -> web.Response:
    body = await _json_body(request)
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        raise AdminError(ErrorKind.INVALID, "version must be a positive whole number (see the history)")
    result = await request.app[SERVICE_KEY].rollback(version, dry_run=_flag(body.get("dry_run", False)),
                                                     author=str(body.get("author", "")))
    return web.json_response(_result_json(result))


async def status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE_KEY].status())


async def health_check(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH_KEY]())


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY](), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def admin_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AdminError as error:
        return error_response(error)


def create_admin_app(
    service: AdminService, *, token: str | None, health: Callable[[], dict[str, Any]],
    metrics_text: Callable[[], bytes],
) -> web.Application:
    app = web.Application(middlewares=[bearer_auth(token=token), admin_errors], client_max_size=1024 * 1024)
    app[SERVICE_KEY] = service
    app[HEALTH_KEY] = health
    app[METRICS_KEY] = metrics_text
    app.router.add_get("/health", health_check)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/policy", apply_policy)
    app.router.add_get("/v1/policy", show_policy)
    app.router.add_post("/v1/policy/set", set_policy)
    app.router.add_get("/v1/policy/history", policy_history)
    app.router.add_post("/v1/policy/rollback", rollback_policy)
    app.router.add_get("/v1/status", status)
    return app

