"""`meridian down`: stops, by pid, every process the `meridian up` of this directory started, then removes
`.meridian/stack.json`; logs stay."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("down", help="stop the stack `meridian up` started in this directory")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian_common.logging_setup import configure_logging
    from regions.teardown import run_down

    configure_logging("down", "WARNING")
    return run_down(Path.cwd(), say=lambda line: print(line, flush=True))
