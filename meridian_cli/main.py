"""Entry point of the `meridian` command.

Every other module of this package is a subcommand group: it defines `register(subparsers)`, which
adds its parser and sets `handler` (a callable taking the parsed namespace and returning an exit
code). Modules are discovered, so adding a subcommand touches no shared list.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import meridian_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meridian", description="Multi-region, OpenAI-compatible LLM router."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(meridian_cli.__path__), key=lambda m: m.name):
        if module_info.name == "main" or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"meridian_cli.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
