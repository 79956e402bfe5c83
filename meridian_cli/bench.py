"""`meridian bench ...`: benchmarks that print a readable table, or one JSON object with --json."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def _progress(quiet: bool) -> Callable[[str], None]:
    return (lambda _message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))


def _overhead(args: argparse.Namespace) -> int:
    from benchmarks.overhead import OverheadSettings, format_table, main_overhead, target_verdicts

    settings = OverheadSettings(requests=args.requests, decision_iterations=args.decision_iterations,
                                stream_repeats=args.stream_repeats)
    figures = main_overhead(settings, _progress(args.json))
    _print(args, figures, format_table)
    return 0 if all(ok for *_, ok in target_verdicts(figures)) or not args.strict else 1


def _print(args: argparse.Namespace, figures: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(figures, indent=None if args.json else 2) if args.json else table(figures))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    overhead = benches.add_parser("overhead", help="router overhead vs direct calls and a bare pass-through")
    overhead.add_argument("--requests", type=int, default=2000, help="requests per case (default 2000)")
    overhead.add_argument("--decision-iterations", type=int, default=20000)
    overhead.add_argument("--stream-repeats", type=int, default=5)
    overhead.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    overhead.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    overhead.set_defaults(handler=_overhead)
