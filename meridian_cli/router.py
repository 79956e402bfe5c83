"""`meridian router --config FILE [--port P] [--workers N]`: runs one regional router, alone or as N worker
processes sharing its port (docs/router.md#workers)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path

from meridian_common.config_loading import ConfigError
from meridian_common.event_loop import run
from meridian_common.logging_setup import configure_logging

MAX_WORKERS = 256


def workers_count(text: str) -> int:
    """`auto` (the CPUs this process may use) or a whole number from 1 to MAX_WORKERS."""
    from meridian_common.worker_pool import usable_cpus

    if text == "auto":
        return usable_cpus()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_WORKERS} workers, got {count}")
    return count


def _worker_of(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    return int(index), int(count)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("router", help="run a regional router")
    parser.add_argument("--config", required=True, type=Path, help="router config file (YAML)")
    parser.add_argument("--port", type=int, help="listen port (overrides listen.port; 0 = any free port)")
    parser.add_argument("--host", help="listen address (overrides listen.host)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening (with workers: "
                        "once every worker listens)")
    parser.add_argument("--workers", type=workers_count, default=1, metavar="N",
                        help="router processes serving the port (SO_REUSEPORT), each a full router; 'auto' = "
                        "the CPUs this process may use (default 1: this process serves)")
    # Set by the pool on each worker it starts; not for people.
    parser.add_argument("--worker", type=_worker_of, help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", type=Path, help=argparse.SUPPRESS)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from data_plane.app import create_app, serve
    from data_plane.config import load_router_config
    from data_plane.worker import WorkerIdentity

    worker = None
    if args.worker is not None:
        index, count = args.worker
        worker = WorkerIdentity(index, count, args.worker_dir)
    configure_logging("router" if worker is None else f"router-w{worker.index}")
    try:
        config = load_router_config(args.config)
    except ConfigError as error:
        print(f"meridian router: {error}", file=sys.stderr)
        return 2
    host = args.host or config.listen.host
    port = config.listen.port if args.port is None else args.port
    if worker is None and args.workers > 1:
        return _run_pool(args, host, port)
    try:
        app = create_app(config, worker)
    except ConfigError as error:
        print(f"meridian router: {error}", file=sys.stderr)
        return 2
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise stall the request path for tens of milliseconds at a time.
    gc.collect()
    gc.freeze()
    return run(serve(app, host, port, args.port_file))


def _run_pool(args: argparse.Namespace, host: str, port: int) -> int:
    """The pool's parent: holds the port, starts `--workers` routers on it and supervises them."""
    from meridian_common.worker_pool import WorkerPool, reserve_port

    try:
        reserved = reserve_port(host, port)
    except OSError as error:
        print(f"meridian router: cannot bind {host}:{port}: {error}", file=sys.stderr)
        return 1
    bound = reserved.getsockname()[1]
    with reserved, tempfile.TemporaryDirectory(prefix="meridian-router-") as directory:
        os.chmod(directory, 0o700)

        def argv_of(index: int, port_file: Path) -> list[str]:
            return [sys.executable, "-m", "meridian_cli.main", "router", "--config", str(args.config),
                    "--host", host, "--port", str(bound), "--port-file", str(port_file),
                    "--worker", f"{index}/{args.workers}", "--worker-dir", directory]

        pool = WorkerPool(argv_of, args.workers, Path(directory), name=f"router config={args.config}")
        return pool.run(bound, args.port_file)
