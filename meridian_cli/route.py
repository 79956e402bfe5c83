"""`meridian route --dry-run`: the routing decision for a request, from a running router or offline
from a config file (no live statistics then), without calling any backend."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("route", help="show the routing decision for a request (no backend call)")
    parser.add_argument("--dry-run", action="store_true", required=True,
                        help="decide only; required, since this command never sends the request")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--router", default=os.environ.get("MERIDIAN_ROUTER_URL"),
                       help="a running router's URL (env MERIDIAN_ROUTER_URL); uses its live statistics")
    where.add_argument("--config", help="decide offline from a router config file")
    parser.add_argument("--model", required=True)
    parser.add_argument("--policy", help="x-meridian-policy")
    parser.add_argument("--latency-budget-ms", help="x-latency-budget-ms")
    parser.add_argument("--priority", help="x-meridian-priority")
    parser.add_argument("--message", default="Hello", help="the user message")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.set_defaults(handler=_run)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    chosen = {"x-meridian-policy": args.policy, "x-latency-budget-ms": args.latency_budget_ms,
              "x-meridian-priority": args.priority}
    return {k: v for k, v in chosen.items() if v is not None}


def _from_router(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{args.router.rstrip('/')}/v1/route", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **_headers(args)})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        raise SystemExit(f"meridian route: {args.router} answered {error.code}: "
                         f"{json.loads(error.read())['error']['message']}") from error
    except urllib.error.URLError as error:
        raise SystemExit(f"meridian route: cannot reach {args.router}: {error.reason}") from error


def _offline(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    from multidict import CIMultiDict, CIMultiDictProxy

    from data_plane.app import create_app
    from data_plane.app_keys import STATE
    from data_plane.config import load_router_config
    from data_plane.errors import ClientError
    from data_plane.serving.request_parsing import parse_openai_request
    from data_plane.serving.route_planning import decide_model, decision_json, model_chain
    from meridian_common.config_loading import ConfigError

    try:
        config = load_router_config(args.config)
        # The state the router would start with; no server is started and no backend called.
        state = create_app(config)[STATE]
        parsed = parse_openai_request("chat/completions", json.dumps(body).encode())
        chain = model_chain(state, parsed, CIMultiDictProxy(CIMultiDict(_headers(args))))
    except (ConfigError, ClientError) as error:
        raise SystemExit(f"meridian route: {error}") from error
    now = time.monotonic()
    return {"region": config.region, "table_version": state.table.version,
            "decisions": [decision_json(decide_model(state, m, r, now)) for m, r in chain]}


def _print_table(result: dict[str, Any]) -> None:
    print(f"region {result['region']}, table version {result['table_version']}")
    for decision in result["decisions"]:
        print(f"\nmodel {decision['model']}: policy {decision['policy']} picks {decision['pick']} "
              f"({decision['reason']}); order {', '.join(decision['order']) or '-'}")
        print(f"  {'deployment':<20}{'region':<12}{'eligible':<10}{'latency ms':>11}{'cost $':>12}"
              f"{'score':>8}  excluded because")
        for c in decision["candidates"]:
            score = "-" if c["score"] is None else f"{c['score']:.3f}"
            print(f"  {c['name']:<20}{c['region']:<12}{str(c['eligible']):<10}{c['latency_ms']:>11.2f}"
                  f"{c['cost']:>12.6f}{score:>8}  {c['excluded_because'] or ''}")


def _run(args: argparse.Namespace) -> int:
    if not args.router and not args.config:
        print("meridian route: give --router URL (or MERIDIAN_ROUTER_URL) or --config FILE", file=sys.stderr)
        return 2
    body = {"model": args.model, "messages": [{"role": "user", "content": args.message}], "stream": args.stream}
    result = _from_router(args, body) if args.router else _offline(args, body)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0
