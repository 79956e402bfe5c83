"""Client API keys and the admin token: bearer tokens compared in constant time, never logged."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from aiohttp import web

from data_plane.errors import ClientError


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _matches_any(token: str, secrets: tuple[str, ...]) -> bool:
    # Compare against every secret so the time taken does not tell which one (or how many) matched.
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(token.encode(), secret.encode())
    return matched


@dataclass(frozen=True, slots=True)
class Credentials:
    client_keys: tuple[str, ...]
    admin_token: str | None

    @classmethod
    def from_environment(cls, client_keys_env: str | None, admin_token_env: str | None) -> Credentials:
        keys = os.environ.get(client_keys_env, "") if client_keys_env else ""
        token = os.environ.get(admin_token_env) if admin_token_env else None
        return cls(tuple(k.strip() for k in keys.split(",") if k.strip()), token or None)

    def check_client(self, request: web.Request) -> None:
        if not self.client_keys:
            return
        if not _matches_any(_bearer(request), self.client_keys):
            raise ClientError(401, "incorrect or missing API key; send it as 'Authorization: Bearer <key>'",
                              code="invalid_api_key")

    def check_admin(self, request: web.Request) -> None:
        if self.admin_token is None:
            raise ClientError(403, "admin endpoints are disabled: the router has no admin token configured "
                              "(set admin_token_env in its config)", code="admin_disabled")
        if not _matches_any(_bearer(request), (self.admin_token,)):
            raise ClientError(401, "incorrect or missing admin token", code="invalid_admin_token")
