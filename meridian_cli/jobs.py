"""`meridian jobs list|show ID|cancel ID`: the asynchronous jobs of a region, through one of its routers
(`--router`, else $MERIDIAN_ROUTER_URL, else the first router of `.meridian/stack.json`) with the admin
token ($MERIDIAN_ADMIN_TOKEN or `--token-env NAME`, else the stack's). Blocking calls: no event loop here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ROUTER_ENV = "MERIDIAN_ROUTER_URL"
TOKEN_ENV = "MERIDIAN_ADMIN_TOKEN"
TIMEOUT_S = 10.0


class JobsCallError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class RouterTarget:
    url: str
    token: str | None = field(repr=False)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("jobs", help="list, show or cancel asynchronous jobs")
    actions = parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the region's recent jobs, newest first")
    listing.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    listing.add_argument("--limit", type=int, default=100)
    show = actions.add_parser("show", help="one job, with its result when done")
    show.add_argument("id")
    cancel = actions.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")
    for sub in (listing, show, cancel):
        sub.add_argument("--router", help=f"a router of the region (default ${ROUTER_ENV}, else the first "
                                          "router of .meridian/stack.json)")
        sub.add_argument("--region", help="with .meridian/stack.json: a router of this region")
        sub.add_argument("--token-env", metavar="NAME",
                         help=f"environment variable holding the admin token (default ${TOKEN_ENV})")
        sub.add_argument("--json", action="store_true", help="print the router's JSON answer")
    parser.set_defaults(handler=_run)


def resolve_target(args: argparse.Namespace) -> RouterTarget:
    url = args.router or os.environ.get(ROUTER_ENV)
    token = os.environ.get(args.token_env) if args.token_env else os.environ.get(TOKEN_ENV)
    if args.token_env and not token:
        raise JobsCallError(f"--token-env {args.token_env}: that variable is not set", 2)
    if url is None or token is None:
        from regions.stack_file import StackFileError, find_stack

        try:
            stack = find_stack()
        except StackFileError as error:
            if url is None:
                raise JobsCallError(f"no router URL: pass --router URL or set ${ROUTER_ENV} ({error})", 2) from error
            stack = {}
        if url is None:
            routers = stack.get("routers", {})
            urls = routers.get(args.region, []) if args.region else [u for us in routers.values() for u in us]
            if not urls:
                raise JobsCallError(f"the stack has no router{' in region ' + args.region if args.region else ''}", 2)
            url = urls[0]
        token = token or stack.get("admin_token")
    return RouterTarget(url.rstrip("/"), token)


def call(target: RouterTarget, method: str, path: str) -> Any:
    request = urllib.request.Request(target.url + path, method=method)
    if target.token:
        request.add_header("Authorization", f"Bearer {target.token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = str(error.reason)
        raise JobsCallError(f"{target.url} answered {error.code}: {message}") from error
    except (urllib.error.URLError, OSError) as error:
        raise JobsCallError(f"cannot reach {target.url}: {getattr(error, 'reason', error)}", 2) from error


def _when(unix_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


def render_list(answer: dict[str, Any]) -> str:
    rows = answer.get("data", [])
    if not rows:
        return f"no jobs in region {answer.get('region')}"
    lines = [f"{'id':38} {'status':10} {'attempts':>8}  {'created':19}  {'owner':20} callback"]
    for row in rows:
        lines.append(f"{row['id']:38} {row['status']:10} {row['attempts']:>8}  {_when(row['created_at']):19}  "
                     f"{row['owner'] or '-':20} {row['callback'] or '-'}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    try:
        target = resolve_target(args)
        if args.jobs_command == "list":
            query = f"?limit={args.limit}" + (f"&status={args.status}" if args.status else "")
            answer = call(target, "GET", "/v1/async" + query)
            print(json.dumps(answer, indent=2) if args.json else render_list(answer))
        elif args.jobs_command == "show":
            print(json.dumps(call(target, "GET", f"/v1/async/{args.id}"), indent=2))
        else:
            answer = call(target, "DELETE", f"/v1/async/{args.id}")
            print(json.dumps(answer, indent=2) if args.json else f"{answer['id']} {answer['status']}")
    except JobsCallError as error:
        print(f"meridian jobs: {error}", file=sys.stderr)
        return error.exit_code
    return 0
