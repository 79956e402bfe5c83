"""How the operator commands (`meridian policy`, `meridian status`) reach the admin API: the URLs and the
token come from flags, else the environment, else `.meridian/stack.json` (written by the launcher); each
URL is tried in turn until one answers. Blocking calls: the CLI has no event loop.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URL_ENV = "MERIDIAN_ADMIN_URL"
TOKEN_ENV = "MERIDIAN_ADMIN_TOKEN"
STACK_FILE = Path(".meridian") / "stack.json"
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


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", action="append", metavar="URL",
                        help=f"admin API URL, repeatable (default: ${URL_ENV}, comma-separated, "
                             f"else {STACK_FILE} control_plane.admin)")
    parser.add_argument("--token-env", metavar="NAME",
                        help=f"environment variable holding the admin token (default: ${TOKEN_ENV}, "
                             f"else {STACK_FILE} admin_token)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate to verify an https admin API")


def _stack(cwd: Path) -> dict[str, Any]:
    path = cwd / STACK_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise AdminCallError(f"{path}: not readable JSON ({error})", 2) from error
    return data if isinstance(data, dict) else {}


def resolve_target(args: argparse.Namespace, environ: Mapping[str, str], cwd: Path) -> AdminTarget:
    stack = _stack(cwd)
    if args.admin:
        urls, source = [u for item in args.admin for u in item.split(",")], "--admin"
    elif environ.get(URL_ENV):
        urls, source = environ[URL_ENV].split(","), f"${URL_ENV}"
    else:
        listed = (stack.get("control_plane") or {}).get("admin") or []
        urls, source = ([listed] if isinstance(listed, str) else list(listed)), str(cwd / STACK_FILE)
    urls = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not urls:
        raise AdminCallError(f"no admin API URL: pass --admin URL, set ${URL_ENV}, or run where "
                             f"{STACK_FILE} exists (start the stack first)", 2)
    if args.token_env:
        token = environ.get(args.token_env)
        if not token:
            raise AdminCallError(f"--token-env {args.token_env}: that variable is not set", 2)
    else:
        token = environ.get(TOKEN_ENV) or stack.get("admin_token")
    return AdminTarget(tuple(urls), token or None, source, args.ca_file)


def target_from(args: argparse.Namespace) -> AdminTarget:
    return resolve_target(args, os.environ, Path.cwd())


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
