"""`meridian demo`: the main job of `make demo`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the bounded demo: backends, a router, traffic, a failure")
    parser.add_argument("--requests", type=int, default=60, help="requests per phase (default 60)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from regions.demo import run_demo

    return run_demo(args.requests, lambda line: print(line, flush=True))
