"""`meridian nearest [--from REGION] [--router URL] [--json]`: the nearest healthy router of the stack in this
directory (or of the router at URL's /v1/regions). `--from` places a simulated client in a topology region: its
distance to each router is the measured round trip plus the topology's RTT (docs/regions.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from regions.client import RouterChoice


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("nearest", help="the nearest healthy router, by measured round trip")
    parser.add_argument("--from", dest="location", metavar="REGION",
                        help="a simulated client's location (a region of the topology)")
    parser.add_argument("--router", action="append", metavar="URL",
                        help="ask this router's /v1/regions instead of reading .meridian/stack.json (repeatable)")
    parser.add_argument("--json", action="store_true", help="print every router, nearest first, as JSON")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from regions.client import NoRouterError, ranked_routers
    from regions.stack_file import StackFileError, find_stack

    try:
        source = args.router if args.router else find_stack(Path.cwd())
        ranked = asyncio.run(ranked_routers(source, location=args.location))
    except (StackFileError, NoRouterError, ValueError) as error:
        print(f"meridian nearest: {error}", file=sys.stderr)
        return 1
    if not ranked:
        print("meridian nearest: no healthy router answered", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"from": args.location, "nearest": _entry(ranked[0]),
                          "ranked": [_entry(choice) for choice in ranked]}, indent=2))
        return 0
    nearest = ranked[0]
    print(f"{nearest.region} {nearest.url} rtt {nearest.rtt_ms:.1f} ms")
    for choice in ranked[1:]:
        print(f"  then {choice.region} {choice.url} rtt {choice.rtt_ms:.1f} ms")
    return 0


def _entry(choice: RouterChoice) -> dict[str, object]:
    return {"region": choice.region, "url": choice.url, "rtt_ms": round(choice.rtt_ms, 3),
            "measured_ms": round(choice.measured_ms, 3)}
