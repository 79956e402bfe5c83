"""Which admin API the operator commands (`meridian policy`, `meridian status`) call: the URLs and the token come
from flags, else the environment, else `.meridian/stack.json` (written by the launcher)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from control_plane.admin.client import TOKEN_ENV, AdminCallError, AdminTarget
from regions import stack_file

URL_ENV = "MERIDIAN_ADMIN_URL"
STACK_FILE = Path(stack_file.STATE_DIR) / stack_file.STACK_FILE


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
