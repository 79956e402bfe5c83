"""`meridian bench ...`: benchmarks that print a readable table, or one JSON object with --json. The benches
that send chat load take the workload flags (docs/workload.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from meridian_cli.chaos import add_workload_flags

if TYPE_CHECKING:
    from meridian_common.workload import WorkloadConfig


def _progress(quiet: bool) -> Callable[[str], None]:
    return (lambda _message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))


def _workload(args: argparse.Namespace) -> WorkloadConfig | None:
    """The workload the flags ask for; None (with the reason on stderr) when a flag is invalid."""
    from meridian_cli.chaos import workload_overrides
    from meridian_common.workload import REALISTIC

    try:
        return workload_overrides(args).apply(REALISTIC)
    except ValueError as error:
        print(f"meridian bench {args.bench}: {error}", file=sys.stderr)
        return None


def _overhead(args: argparse.Namespace) -> int:
    from benchmarks.overhead import OverheadSettings, format_table, main_overhead, target_verdicts

    workload = _workload(args)
    if workload is None:
        return 2
    settings = OverheadSettings(requests=args.requests, decision_iterations=args.decision_iterations,
                                stream_repeats=args.stream_repeats, workload=workload,
                                cpu_connections=args.connections, cpu_seconds=args.cpu_seconds, workers=args.workers)
    figures = main_overhead(settings, _progress(args.json))
    _print(args, figures, format_table)
    return 0 if all(ok for *_, ok in target_verdicts(figures)) or not args.strict else 1


def _propagation(args: argparse.Namespace) -> int:
    if args.subscribers is not None:
        return _propagation_scale(args)
    from benchmarks.control_plane_benches import propagation_table, run_propagation

    figures = run_propagation(args.pushes, args.routers_per_region, _progress(args.json))
    _print(args, figures, propagation_table)
    return 1 if args.strict and figures["p99_ms"] >= 500 else 0


def _propagation_scale(args: argparse.Namespace) -> int:
    from benchmarks.propagation_scale import TARGET_P99_MS, propagation_scale_table, run_propagation_scale

    figures = run_propagation_scale(args.subscribers, args.pushes, args.subscriber_processes, _progress(args.json))
    _print(args, figures, propagation_scale_table)
    missed = any(run["push_to_all_ack_p99_ms"] >= TARGET_P99_MS or not run["every_subscriber_acked_every_push"]
                 for run in figures["runs"])
    return 1 if args.strict and missed else 0


def _subscriber_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(count < 1 or count > 5000 for count in counts):
        raise argparse.ArgumentTypeError(f"expected comma-separated counts from 1 to 5000, got {text!r}")
    return counts


def _failover(args: argparse.Namespace) -> int:
    from benchmarks.control_plane_benches import failover_table, run_failover

    figures = run_failover(args.lease_ttl_s, _progress(args.json))
    _print(args, figures, failover_table)
    missed = figures["client_errors"] > 0 or figures["failover_s"] >= figures["lease_ttl_s"] + 1
    return 1 if args.strict and missed else 0


def _burst(args: argparse.Namespace) -> int:
    from benchmarks.burst import BurstSettings, format_table, main_burst

    workload = _workload(args)
    if workload is None:
        return 2
    settings = BurstSettings(capacity=args.capacity, factor=args.factor, queue_timeout_s=args.queue_timeout_s,
                             queue_size=args.queue_size, ttft_ms=args.ttft_ms, workload=workload)
    _print(args, main_burst(settings, _progress(args.json)), format_table)
    return 0


def _prefix_affinity(args: argparse.Namespace) -> int:
    from benchmarks.prefix_affinity import PrefixAffinitySettings, format_table, main_prefix_affinity

    workload = _workload(args)
    if workload is None:
        return 2
    settings = PrefixAffinitySettings(
        deployments=args.deployments, requests=args.requests, concurrency=args.concurrency,
        shared_prefixes=args.shared_prefixes, shared_prefix_tokens=args.shared_prefix_tokens,
        prefill_ms_per_1k=args.prefill_ms_per_1k, prefix_cache_blocks=args.prefix_cache_blocks,
        router_prefix_blocks=args.router_prefix_blocks, seed=args.seed,
        workload=workload)
    figures = main_prefix_affinity(settings, _progress(args.json))
    _print(args, figures, format_table)
    helped = figures["hit_rate_with"] > figures["hit_rate_without"] and (figures["ttft_ratio"] or 1.0) < 1.0
    return 0 if helped or not args.strict else 1


def _etcd_growth(args: argparse.Namespace) -> int:
    from benchmarks.etcd_growth import etcd_growth_table, run_etcd_growth

    figures = run_etcd_growth(args.pushes, args.versions_kept, args.compaction_retention_s, _progress(args.json))
    _print(args, figures, etcd_growth_table)
    return 0


def _big_bodies(args: argparse.Namespace) -> int:
    from benchmarks.big_bodies import SHAPES, BigBodiesSettings, format_table, main_big_bodies, target_verdicts

    unknown = [shape for shape in args.shapes if shape not in SHAPES]
    if unknown:
        print(f"meridian bench big-bodies: unknown shapes {unknown}; expected some of {', '.join(SHAPES)}",
              file=sys.stderr)
        return 2
    settings = BigBodiesSettings(bodies=args.bodies, body_mib=args.body_mib, shapes=tuple(args.shapes))
    figures = main_big_bodies(settings, _progress(args.json))
    _print(args, figures, format_table)
    return 0 if all(ok for _, ok in target_verdicts(figures)) or not args.strict else 1


def _print(args: argparse.Namespace, figures: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(figures, indent=None if args.json else 2) if args.json else table(figures))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    benches = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    overhead = benches.add_parser("overhead", help="router overhead vs direct calls and a bare pass-through")
    overhead.add_argument("--requests", type=int, default=2000,
                          help="requests per target at concurrency 1, for the added latency (default 2000)")
    overhead.add_argument("--connections", type=int, default=32, help="connections of the CPU cases (default 32)")
    overhead.add_argument("--cpu-seconds", type=float, default=8.0,
                          help="load per target per round in the CPU cases (default 8)")
    overhead.add_argument("--workers", type=int, default=1, help="the router's --workers (default 1)")
    overhead.add_argument("--decision-iterations", type=int, default=20000)
    overhead.add_argument("--stream-repeats", type=int, default=5)
    overhead.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    overhead.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    add_workload_flags(overhead)
    overhead.set_defaults(handler=_overhead)
    burst = benches.add_parser("burst", help="a burst of N x a deployment's capacity through the router's queue")
    burst.add_argument("--capacity", type=int, default=8, help="the deployment's max_concurrency (default 8)")
    burst.add_argument("--factor", type=int, default=4, help="burst size as a multiple of capacity (default 4)")
    burst.add_argument("--queue-timeout-s", type=float, default=30.0, help="the model's queue timeout")
    burst.add_argument("--queue-size", type=int, default=0, help="the model's queue size (default: the burst)")
    burst.add_argument("--ttft-ms", type=float, default=50.0, help="the simulator's time to first token")
    burst.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    add_workload_flags(burst)
    burst.set_defaults(handler=_burst)

    prefix = benches.add_parser("prefix-affinity", help="shared prompt prefixes over N simulators, the router's "
                                                        "prefix affinity on and off: cache hit rate and TTFT")
    prefix.add_argument("--deployments", type=int, default=3, help="identical simulators (default 3)")
    prefix.add_argument("--requests", type=int, default=300, help="requests per run (default 300)")
    prefix.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    prefix.add_argument("--shared-prefixes", type=int, default=12, help="K shared prefixes (default 12)")
    prefix.add_argument("--shared-prefix-tokens", type=int, default=3000,
                        help="their mean length; from 2/3 to 4/3 of it (default 3000)")
    prefix.add_argument("--prefill-ms-per-1k", type=float, default=80.0,
                        help="the simulators' prefill per 1k uncached tokens (default 80)")
    prefix.add_argument("--prefix-cache-blocks", type=int, default=256,
                        help="each simulator's prefix cache, in 64-token blocks (default 256)")
    prefix.add_argument("--router-prefix-blocks", type=int, default=None,
                        help="the router's prefix_affinity.blocks_per_deployment (default: the router's, 16384)")
    prefix.add_argument("--seed", type=int, default=0, help="the request sequence's and simulators' seed")
    prefix.add_argument("--strict", action="store_true",
                        help="exit 1 unless affinity raised the hit rate and lowered mean TTFT")
    prefix.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    add_workload_flags(prefix)
    prefix.set_defaults(handler=_prefix_affinity)

    big = benches.add_parser("big-bodies", help="concurrent bodies of the largest size: router memory and /health")
    big.add_argument("--bodies", type=int, default=4, help="bodies sent at once (default 4)")
    big.add_argument("--body-mib", type=float, default=16.0, help="size of each, and max_body_bytes (default 16)")
    big.add_argument("--shapes", nargs="+", default=["empty-objects", "long-text", "tiny-parts"],
                     help="body shapes, one round each (default: all)")
    big.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    big.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    big.set_defaults(handler=_big_bodies)

    propagation = benches.add_parser("propagation", help="policy push -> every router applied the new table")
    propagation.add_argument("--pushes", type=int, default=30)
    propagation.add_argument("--routers-per-region", type=int, default=2)
    propagation.add_argument("--subscribers", type=_subscriber_counts, default=None, metavar="N[,N...]",
                             help="instead of routers: N light table subscribers (the router's own subscriber "
                                  "and validator) against one replica, a fresh stack per N, e.g. 10,100,1000")
    propagation.add_argument("--subscriber-processes", type=int, default=2,
                             help="processes the subscribers are spread over (default 2)")
    propagation.add_argument("--strict", action="store_true",
                             help="exit 1 when p99 is 500 ms or more (or, with --subscribers, a push missed one)")
    propagation.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    propagation.set_defaults(handler=_propagation)

    failover = benches.add_parser("failover", help="SIGKILL of the leader -> the new leader's first table")
    failover.add_argument("--lease-ttl-s", type=float, default=3.0)
    failover.add_argument("--strict", action="store_true", help="exit 1 on a client error or a slow failover")
    failover.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    failover.set_defaults(handler=_failover)

    growth = benches.add_parser("etcd-growth", help="policy pushes -> etcd's db size, compacted and not")
    growth.add_argument("--pushes", type=int, default=10_000)
    growth.add_argument("--versions-kept", type=int, default=100, help="policy versions kept (default 100)")
    growth.add_argument("--compaction-retention-s", type=float, default=5.0,
                        help="etcd's periodic auto-compaction window (default 5; the stacks run 300)")
    growth.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    growth.set_defaults(handler=_etcd_growth)
