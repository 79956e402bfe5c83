"""Client API keys and the admin token: bearer tokens compared in constant time, never logged, and the
identity a client's limits, cached answers and jobs are kept under."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from aiohttp import web

from data_plane.errors import ClientError
from meridian_common.config_loading import ConfigError


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _matching(token: str, secrets: tuple[str, ...]) -> str | None:
    # Compare against every secret so the time taken does not tell which one (or how many) matched.
    found = None
    for secret in secrets:
        if hmac.compare_digest(token.encode(), secret.encode()):
            found = secret
    return found


KEYED = "key-"
"""The prefix of the identity of a client that proved it holds a key."""


ANONYMOUS = "anonymous"
"""How metrics name every client that holds no key."""


def keyed(identity: str) -> bool:
    return identity.startswith(KEYED)


def metric_client(identity: str) -> str:
    """The client as a metric label: a keyed client's identity, which names its key's digest and is one of as
    many as the router has keys; `anonymous` for an address, one of as many as there are hosts."""
    return identity if keyed(identity) else ANONYMOUS


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Credentials:
    client_keys: tuple[str, ...]
    admin_token: str | None

    @classmethod
    def from_environment(cls, client_keys_env: str | None, admin_token_env: str | None) -> Credentials:
        """Raises ConfigError when `client_keys_env` names a variable that is unset or holds no key: a router
        told to authenticate its clients never serves without doing so."""
        keys = tuple(k.strip() for k in os.environ.get(client_keys_env, "").split(",") if k.strip()) \
            if client_keys_env else ()
        if client_keys_env and not keys:
            raise ConfigError("the environment", "client_api_keys_env",
                              f"names {client_keys_env}, which is unset or holds no key: set it to the "
                              "comma-separated client keys, or remove client_api_keys_env to serve without "
                              "client authentication")
        token = os.environ.get(admin_token_env) if admin_token_env else None
        return cls(keys, token or None)

    def authenticate(self, request: web.Request) -> str:
        """The client's identity, or 401. With client keys it is a digest of the key the client proved it
        holds; without, the client's network address (a made-up token proves nothing, so it cannot buy a
        fresh quota). Never a key itself."""
        if not self.client_keys:
            return f"peer-{request.remote or 'unknown'}"
        key = _matching(_bearer(request), self.client_keys)
        if key is None:
            raise ClientError(401, "incorrect or missing API key; send it as 'Authorization: Bearer <key>'",
                              code="invalid_api_key")
        return KEYED + _digest(key)

    def is_admin(self, request: web.Request) -> bool:
        return self.admin_token is not None and _matching(_bearer(request), (self.admin_token,)) is not None

    def check_admin(self, request: web.Request) -> None:
        if self.admin_token is None:
            raise ClientError(403, "admin endpoints are disabled: the router has no admin token configured "
                              "(set admin_token_env in its config)", code="admin_disabled")
        if not self.is_admin(request):
            raise ClientError(401, "incorrect or missing admin token", code="invalid_admin_token")
