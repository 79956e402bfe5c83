"""`meridian chaos list` and `meridian chaos run NAME|--all [--duration S]`: break a running stack under a
bounded load, check what must hold, write a report (docs/chaos.md). Exit 0 when every check passed, 1 when
one failed, 2 when there is no stack or the usage is wrong.

Also the workload flags that `meridian demo` and `meridian bench` share with `meridian chaos run`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meridian_common.workload import WorkloadOverrides


def add_workload_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "workload", "what the simulated clients send (docs/workload.md); each flag overrides every client's own")
    group.add_argument("--answer-tokens-median", type=int, metavar="N",
                       help="median answer length in tokens (default 200, long-tailed)")
    group.add_argument("--prompt-tokens-median", type=int, metavar="N",
                       help="median prompt length in tokens (default 300, long-tailed)")
    group.add_argument("--stream-share", type=float, metavar="S", help="share of streamed requests, 0 to 1 "
                                                                       "(default 0.5)")
    group.add_argument("--tiny-answers", action="store_true",
                       help="answers of about 4 to 16 tokens, one-line prompts, none streamed (the other flags "
                            "apply on top)")


def workload_overrides(args: argparse.Namespace) -> WorkloadOverrides:
    """The workload flags, checked against the default workload; a ValueError names the flag."""
    from pydantic import ValidationError

    from meridian_common.workload import REALISTIC, WorkloadOverrides

    overrides = WorkloadOverrides(answer_tokens_median=args.answer_tokens_median,
                                  prompt_tokens_median=args.prompt_tokens_median, stream_share=args.stream_share,
                                  tiny=args.tiny_answers)
    try:
        overrides.apply(REALISTIC)
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    return overrides


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("chaos", help="chaos scenarios against the running stack",
                                   description="Chaos scenarios against the stack of `meridian up` (docs/chaos.md).")
    commands = parser.add_subparsers(dest="chaos_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="the scenarios and what each breaks")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    run = commands.add_parser("run", help="run one scenario, or --all")
    run.add_argument("name", nargs="?", help="scenario name (see `meridian chaos list`)")
    run.add_argument("--all", action="store_true", help="every scenario, one after the other")
    run.add_argument("--duration", type=float, default=8.0,
                     help="seconds of fault (default 8); baseline and recovery are in proportion")
    run.add_argument("--baseline", type=float, help="seconds of load before the fault")
    run.add_argument("--recovery", type=float, help="seconds of load after the fault is removed")
    run.add_argument("--workers", type=int, default=None,
                     help="closed-loop workers per simulated client (default 6)")
    run.add_argument("--stack", type=Path, help="stack file (default: .meridian/stack.json here)")
    run.add_argument("--reports", type=Path, help="where reports go (default: <stack directory>/reports)")
    run.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    add_workload_flags(run)
    run.set_defaults(handler=_run)


def _list(args: argparse.Namespace) -> int:
    from chaos.scenarios import SCENARIOS

    if args.json:
        print(json.dumps([{"name": s.name, "injects": s.injects, "description": s.description,
                           "needs": sorted(n.name.lower() for n in s.needs)} for s in SCENARIOS.values()], indent=2))
        return 0
    for scenario in SCENARIOS.values():
        needs = "".join(f" [needs {n.value}]" for n in sorted(scenario.needs, key=lambda n: n.value))
        print(f"{scenario.name:26} {scenario.injects}{needs}")
    return 0


def _find_stack(path: Path | None) -> dict[str, Any]:
    from regions import stack_file

    if path is None:
        return stack_file.find_stack()
    stack = stack_file.read_stack(path)
    if stack is None:
        raise stack_file.StackFileError(f"{path} does not exist")
    if not stack_file.alive_processes(stack):
        raise stack_file.StackFileError(f"the stack of {path} is not running any more")
    return stack


def _run(args: argparse.Namespace) -> int:
    from chaos.runner import run_and_report
    from chaos.scenario import RunSettings
    from chaos.scenarios import SCENARIOS
    from meridian_common.logging_setup import configure_logging
    from regions.stack_file import StackFileError

    configure_logging("chaos", "WARNING")
    if args.all == bool(args.name):
        print("meridian chaos run: name one scenario or pass --all", file=sys.stderr)
        return 2
    if args.name and args.name not in SCENARIOS:
        print(f"meridian chaos run: unknown scenario {args.name!r}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.duration <= 0 or (args.workers is not None and args.workers < 1):
        print("meridian chaos run: --duration must be > 0 and --workers >= 1", file=sys.stderr)
        return 2
    try:
        workload = workload_overrides(args)
    except ValueError as error:
        print(f"meridian chaos run: {error}", file=sys.stderr)
        return 2
    try:
        stack = _find_stack(args.stack)
    except StackFileError as error:
        print(f"meridian chaos run: {error} (run `meridian up --detach` first)", file=sys.stderr)
        return 2
    overrides: dict[str, Any] = {"reports_dir": args.reports, "workload": workload}
    if args.workers is not None:
        overrides["workers_per_client"] = args.workers
    settings = RunSettings.for_fault(args.duration, **overrides)
    if args.baseline is not None or args.recovery is not None:
        settings = RunSettings(baseline_s=args.baseline or settings.baseline_s, fault_s=args.duration,
                               recovery_s=args.recovery or settings.recovery_s, **overrides)
    out = sys.stderr if args.json else sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    scenarios = list(SCENARIOS.values()) if args.all else [SCENARIOS[args.name]]
    unmet = {s.name: reason for s in scenarios if (reason := s.unmet_needs(stack)) is not None}
    if not args.all and unmet:
        print(f"meridian chaos run: {unmet[args.name]}", file=sys.stderr)
        return 2
    for reason in unmet.values():
        say(f"skipped: {reason}")
    scenarios = [s for s in scenarios if s.name not in unmet]
    results = []
    for scenario in scenarios:
        result = asyncio.run(run_and_report(scenario, stack, settings, say))
        results.append(result)
        for line in result.verdict_lines():
            say(line)
        say(f"report: {result.report_dir}")
    if args.all:
        say("")
        for result in results:
            say(f"{'PASS' if result.passed else 'FAIL'}  {result.scenario.name}")
    if args.json:
        print(json.dumps([{"scenario": r.scenario.name, "passed": r.passed, "error": r.error,
                           "checks": [c.as_json() for c in r.checks], "report": str(r.report_dir)}
                          for r in results], indent=2))
    return 0 if all(r.passed for r in results) else 1
