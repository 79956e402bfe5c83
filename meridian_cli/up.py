"""`meridian up [--topology FILE] [--routers-per-region N] [--router-workers N] [--etcd-members N]
[--redis-sentinel] [--detach]`:
starts a whole multi-region stack on 127.0.0.1 (etcd, Redis, Toxiproxy, two control-plane replicas, the routers,
the simulated backends) and writes `.meridian/stack.json` (docs/regions.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from regions.topology import DEFAULT_TOPOLOGY

    parser = subparsers.add_parser(
        "up", help="start a local multi-region stack from a topology",
        description="Starts everything a topology needs on 127.0.0.1 and writes .meridian/stack.json in the "
                    "current directory; runs until Ctrl-C unless --detach (see docs/regions.md).",
    )
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY,
                        help="topology file (default: the bundled regions/topology.yaml)")
    parser.add_argument("--routers-per-region", type=int, default=1, help="routers in each region (default 1)")
    parser.add_argument("--router-workers", type=int, default=1, metavar="N",
                        help="worker processes of each router, sharing its port (`meridian router --workers`; "
                        "default 1)")
    parser.add_argument("--etcd-members", type=int, default=1, metavar="N",
                        help="etcd as a cluster of N members (3 or 5 for a quorum that survives losing one or two), "
                        "every member in each control-plane replica's endpoints (default 1: a single etcd)")
    parser.add_argument("--redis-sentinel", action="store_true",
                        help="Redis as a primary, a replica and three sentinels (failover in about 2 s); every "
                        "router and replica finds the primary through the sentinels")
    parser.add_argument("--detach", action="store_true", help="return once the stack is ready; `meridian down` "
                        "stops it")
    parser.add_argument("--timeout", type=float, default=45.0,
                        help="seconds to wait for every router to apply a control-plane table (default 45)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from meridian_common.config_loading import ConfigError
    from meridian_common.logging_setup import configure_logging
    from regions.launcher import UpOptions, run_up
    from regions.topology import load_topology

    configure_logging("up", "WARNING")
    if not 1 <= args.routers_per_region <= 16:
        print("meridian up: --routers-per-region must be between 1 and 16", file=sys.stderr)
        return 2
    if not 1 <= args.router_workers <= 16:
        print("meridian up: --router-workers must be between 1 and 16", file=sys.stderr)
        return 2
    if not 1 <= args.etcd_members <= 7:
        print("meridian up: --etcd-members must be between 1 and 7 (3 or 5 for a real quorum)", file=sys.stderr)
        return 2
    try:
        load_topology(args.topology)
    except ConfigError as error:
        print(f"meridian up: {error}", file=sys.stderr)
        return 2
    options = UpOptions(topology_path=args.topology, routers_per_region=args.routers_per_region,
                        router_workers=args.router_workers, directory=Path.cwd(), table_wait_s=args.timeout,
                        etcd_members=args.etcd_members, redis_sentinel=args.redis_sentinel)
    return run_up(options, detach=args.detach, say=lambda line: print(line, flush=True))
