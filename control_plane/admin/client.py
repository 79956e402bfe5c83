"""The admin API's client, for `meridian policy|status`, the demo and the benches: each admin URL is tried in turn
until one answers, a refusal is final. Blocking calls (urllib): its callers have no event loop or run it in a
thread.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_ENV = "MERIDIAN_ADMIN_TOKEN"
"""Where the operator commands read the token from; named in the hint of a 401."""
TIMEOUT_S = 5.0


class AdminCallError(Exception):
    """What went wrong, ready to print; `exit_code` 1 for a refusal, 2 for nothing reachable or misuse."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class AdminTarget:
    urls: tuple[str, ...]
    token: str | None = field(repr=False)
    source: str
    ca_file: Path | None = None


def call(target: AdminTarget, method: str, path: str, body: Any = None) -> Any:
    """The JSON answer of the first admin URL that answers; a refusal (4xx) is final, an unavailable replica
    (503, connection refused, timeout) moves on to the next URL."""
    data = json.dumps(body).encode() if body is not None else None
    context = ssl.create_default_context(cafile=str(target.ca_file)) if target.ca_file else None
    failures = []
    for url in target.urls:
        request = urllib.request.Request(url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if target.token:
            request.add_header("Authorization", f"Bearer {target.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = _error_body(error)
            if error.code == 503:
                failures.append(f"{url}: {answer}")
                continue
            raise AdminCallError(_refusal(url, error.code, answer, target)) from error
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            failures.append(f"{url}: {reason}")
    raise AdminCallError("no admin API reachable (from " + target.source + "):\n  " + "\n  ".join(failures), 2)


def _error_body(error: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(error.read() or b"{}")
        details = payload.get("error", {})
        problems = details.get("problems") or []
        return str(details.get("message", error.reason)) + "".join(f"\n    {p}" for p in problems)
    except (ValueError, AttributeError):
        return str(error.reason)


def _refusal(url: str, status: int, answer: str, target: AdminTarget) -> str:
    if status == 401:
        hint = "no token found" if not target.token else "the token was refused"
        return (f"{url}: unauthorized ({hint}); set ${TOKEN_ENV} or --token-env NAME to the token the "
                f"control plane reads from its admin.token_env")
    return f"refused by {url} (HTTP {status}): {answer}"
