"""Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`), so SDKs parse them."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}}
    )


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, code=code, param=param),
        content_type="application/json",
        headers=headers,
    )


class ClientError(Exception):
    """A request the router refuses; the handler turns it into an OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(self.status, self.message, code=self.code, param=self.param, headers=self.headers)
