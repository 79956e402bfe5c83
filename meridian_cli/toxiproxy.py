"""`meridian toxiproxy-server`: a Toxiproxy-compatible server (HTTP API + TCP proxies with toxics)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("toxiproxy-server",
                                   help="serve Toxiproxy's HTTP API and proxies (used when toxiproxy-server is absent)")
    parser.add_argument("--host", default="127.0.0.1", help="address of the HTTP API (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8474, help="port of the HTTP API; 0 picks a free one")
    parser.add_argument("--port-file", type=Path, help="write the bound API port to this file once listening")
    parser.add_argument("--config", type=Path, help="JSON array of proxies to create at start (as /populate)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian_common.logging_setup import configure_logging
    from regions.toxiproxy.server import serve

    configure_logging("toxiproxy")
    asyncio.run(serve(args.host, args.port, port_file=args.port_file, config_path=args.config))
    return 0
