"""`meridian router --config FILE [--port P]`: runs one regional router."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from meridian_common.config_loading import ConfigError
from meridian_common.event_loop import run
from meridian_common.logging_setup import configure_logging


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("router", help="run a regional router")
    parser.add_argument("--config", required=True, type=Path, help="router config file (YAML)")
    parser.add_argument("--port", type=int, help="listen port (overrides listen.port; 0 = any free port)")
    parser.add_argument("--host", help="listen address (overrides listen.host)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from data_plane.app import create_app, serve
    from data_plane.app_keys import CONFIG
    from data_plane.config import load_router_config

    configure_logging("router")
    try:
        app = create_app(load_router_config(args.config))
    except ConfigError as error:
        print(f"meridian router: {error}", file=sys.stderr)
        return 2
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise stall the request path for tens of milliseconds at a time.
    gc.collect()
    gc.freeze()
    listen = app[CONFIG].listen
    host = args.host or listen.host
    port = listen.port if args.port is None else args.port
    return run(serve(app, host, port, args.port_file))


