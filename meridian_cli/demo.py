"""`meridian demo`: the main job of `make demo` (docs/regions.md, "The demo")."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from meridian_cli.chaos import add_workload_flags
    from regions.topology import DEFAULT_TOPOLOGY

    parser = subparsers.add_parser(
        "demo", help="the bounded multi-region demo: a stack, traffic, long prompts, a policy push, a saturated "
                     "backend",
        description="Starts a stack (as meridian up), sends traffic from simulated clients in every region, adds "
                    "long prompts (they move to linear-attention and hybrid backends), pushes a policy, saturates a "
                    "backend, lets it recover, writes .meridian/reports/demo-<time>/ "
                    "and tears the stack down. Exit code 0 when the expectations held.")
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY,
                        help="topology file (default: the bundled regions/topology.yaml)")
    parser.add_argument("--phase-seconds", type=float, metavar="S",
                        help="length of every phase (baseline, long-context, policy, saturation, recovery); default "
                             "20, 20, 20, 20, 15")
    parser.add_argument("--budget-ms", type=float, default=1500.0,
                        help="latency budget of the pushed cost-first policy (default 1500)")
    parser.add_argument("--saturate", metavar="BACKEND",
                        help="the backend to saturate (default: the busiest linear-attention one)")
    parser.add_argument("--table-every", type=float, default=None, metavar="S",
                        help="seconds between live tables (default 5, or the phase length / 2 when shorter)")
    parser.add_argument("--reports-dir", type=Path, help="where report directories go (default .meridian/reports)")
    add_workload_flags(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from demo.phases import DemoSettings
    from demo.run import run_demo
    from meridian_cli.chaos import workload_overrides
    from meridian_common.logging_setup import configure_logging

    configure_logging("demo", "WARNING")
    try:
        workload = workload_overrides(args)
    except ValueError as error:
        print(f"meridian demo: {error}", file=sys.stderr)
        return 2
    settings = DemoSettings(topology_path=args.topology, directory=Path.cwd(), latency_budget_ms=args.budget_ms,
                            saturate=args.saturate, reports_dir=args.reports_dir, workload=workload)
    if args.phase_seconds is not None:
        s = args.phase_seconds
        settings = replace(settings, baseline_s=s, long_context_s=s, policy_s=s, saturation_s=s, recovery_s=s,
                           table_every_s=min(settings.table_every_s, max(1.0, s / 2)))
    if args.table_every is not None:
        settings = replace(settings, table_every_s=args.table_every)
    return run_demo(settings, lambda line: print(line, flush=True))
