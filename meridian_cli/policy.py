"""`meridian policy apply|set|show|history|rollback`: the operator's side of the admin API's policies."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from control_plane.admin.client import AdminCallError, call
from meridian_cli._admin_target import add_admin_arguments, target_from

# `policy set` flags -> the admin API's field names.
_SET_FIELDS = {
    "policy": "policy", "latency_budget_ms": "latency_budget_ms", "priority": "priority", "rpm": "rpm",
    "tpm": "tpm", "local_ratio": "local_ratio", "max_error_rate": "max_error_rate",
    "max_ttft_p95_ms": "max_ttft_p95_ms", "max_tpot_p95_ms": "max_tpot_p95_ms",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("policy", help="show and change routing policies (admin API)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    apply = actions.add_parser("apply", help="apply a policy document (YAML)")
    apply.add_argument("file", type=Path, help="policy document, or - for stdin")
    apply.add_argument("--dry-run", action="store_true", help="show the diff of the resulting tables only")
    apply.set_defaults(handler=_apply)

    change = actions.add_parser("set", help="change fields of one region's model")
    change.add_argument("--region", required=True)
    change.add_argument("--model", required=True)
    change.add_argument("--policy")
    change.add_argument("--latency-budget-ms", type=float)
    change.add_argument("--priority", help="speed, cost, quality or balanced")
    change.add_argument("--rpm", type=int, help="client requests per minute")
    change.add_argument("--tpm", type=int, help="client tokens per minute")
    change.add_argument("--local-ratio", type=float)
    change.add_argument("--max-error-rate", type=float)
    change.add_argument("--max-ttft-p95-ms", type=float, help="eject over this merged TTFT p95 (0 = never)")
    change.add_argument("--max-tpot-p95-ms", type=float, help="eject over this merged TPOT p95 (0 = never)")
    change.add_argument("--dry-run", action="store_true")
    change.set_defaults(handler=_set)

    show = actions.add_parser("show", help="the policy document in force")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)

    history = actions.add_parser("history", help="every version, newest first")
    history.add_argument("--limit", type=int, default=0)
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=_history)

    rollback = actions.add_parser("rollback", help="put an earlier version back in force (as a new version)")
    rollback.add_argument("version", type=int)
    rollback.add_argument("--dry-run", action="store_true")
    rollback.set_defaults(handler=_rollback)

    for sub in (apply, change, show, history, rollback):
        add_admin_arguments(sub)
        if sub is not show and sub is not history:
            sub.add_argument("--author", default="", help="recorded with the version (default: admin)")


def _guarded(run: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        try:
            return int(run(args))
        except AdminCallError as error:
            print(f"meridian policy {args.action}: {error}", file=sys.stderr)
            return error.exit_code

    return handler


def _print_result(result: dict[str, Any], dry_run: bool) -> int:
    if dry_run:
        print("dry run: nothing was written. Changes to the tables:")
        print(result.get("table_diff") or "no changes")
        if result.get("policy_diff") and result["policy_diff"] != "no changes":
            print("\nPolicy document:")
            print(result["policy_diff"])
    else:
        print(f"applied: policy version {result['version']}")
        print(result.get("policy_diff") or "")
    return 0


@_guarded
def _apply(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    except OSError as error:
        raise AdminCallError(f"cannot read {args.file}: {error.strerror or error}", 2) from error
    result = call(target_from(args), "POST", "/v1/policy",
                  {"yaml": text, "dry_run": args.dry_run, "author": args.author})
    return _print_result(result, args.dry_run)


@_guarded
def _set(args: argparse.Namespace) -> int:
    changes = {field: getattr(args, flag) for flag, field in _SET_FIELDS.items() if getattr(args, flag) is not None}
    if not changes:
        raise AdminCallError("nothing to set: give at least one of " + ", ".join(
            "--" + f.replace("_", "-") for f in _SET_FIELDS), 2)
    body = {"region": args.region, "model": args.model, **changes, "dry_run": args.dry_run, "author": args.author}
    return _print_result(call(target_from(args), "POST", "/v1/policy/set", body), args.dry_run)


@_guarded
def _show(args: argparse.Namespace) -> int:
    document = call(target_from(args), "GET", "/v1/policy")
    if args.json:
        print(json.dumps(document, indent=2))
    elif not document["version"]:
        print("# no policy document pushed yet: the catalog's defaults are in force")
    else:
        print(document["yaml"], end="")
    return 0


def _when(unix_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_ms / 1000)) if unix_ms else "-"


@_guarded
def _history(args: argparse.Namespace) -> int:
    documents = call(target_from(args), "GET", f"/v1/policy/history?limit={args.limit}")["documents"]
    if args.json:
        print(json.dumps(documents, indent=2))
        return 0
    if not documents:
        print("no policy document pushed yet")
        return 0
    print(f"{'VERSION':>8}  {'APPLIED':19}  {'AUTHOR':12}  {'ENTRIES':>7}  COMMENT")
    for index, document in enumerate(documents):
        marker = " (in force)" if index == 0 else ""
        print(f"{document['version']:>8}  {_when(document['applied_at_unix_ms']):19}  "
              f"{document['author'] or '-':12}  {len(document['models']):>7}  {document['comment']}{marker}")
    return 0


@_guarded
def _rollback(args: argparse.Namespace) -> int:
    result = call(target_from(args), "POST", "/v1/policy/rollback",
                  {"version": args.version, "dry_run": args.dry_run, "author": args.author})
    return _print_result(result, args.dry_run)
