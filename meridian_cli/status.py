"""`meridian status [--json]`: the leader and its epoch, each replica, every router with the table version
it applied and its age, the tables and the backends' state, from any reachable control-plane replica."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from control_plane.admin.client import AdminCallError, call
from meridian_cli._admin_target import add_admin_arguments, target_from


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="control plane, routers and backends at a glance")
    parser.add_argument("--json", action="store_true", help="the admin API's status document")
    add_admin_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        status = call(target_from(args), "GET", "/v1/status")
    except AdminCallError as error:
        print(f"meridian status: {error}", file=sys.stderr)
        return error.exit_code
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def render(status: dict[str, Any]) -> str:
    lines = []
    leader = status.get("leader")
    if leader:
        lines.append(f"leader    {leader['id']}  epoch {leader['epoch']}  pid {leader['pid']}  "
                     f"admin {leader['admin']}  grpc {leader['grpc']}")
    else:
        lines.append("leader    none: no replica can prove leadership, tables are not being published")
    etcd = status.get("etcd", {})
    if not etcd.get("reachable", True):
        lines.append(f"etcd      {etcd.get('error')} (as seen by {status['this_replica']['id']})")
    this = status["this_replica"]
    if this["role"] == "leader" and not this["publishing"]:
        lines.append(f"warning   {this['id']} leads but is not publishing: {this['reason']}")
    lines.append("")
    lines.append("replicas")
    for row in status["replicas"]:
        lines.append(f"  {row['id']:16} {row['role']:10} pid {row['pid']:<7} admin {row['admin']}  grpc {row['grpc']}")
    lines.append("")
    lines.append("routers")
    if not status["routers"]:
        lines.append("  none connected")
    for row in status["routers"]:
        nack = f"  last NACK {row['last_nack']}" if row["last_nack"] else ""
        lines.append(f"  {row['region']:10} {row['router_id']:16} {row['url']:28} version {row['version']:<6} "
                     f"age {_age(row['age_s']):>7}  via {row['replica_id']}{nack}")
    lines.append("")
    lines.append("tables")
    for row in status["tables"]:
        lines.append(f"  {row['region']:10} version {row['version']:<6} epoch {row['epoch']:<6} "
                     f"age {_age(row['age_s'])}")
    lines.append("")
    lines.append("backends")
    for row in status["backends"]:
        reason = f"  ({row['reason']})" if row["state"] != "active" else ""
        lines.append(f"  {row['region']:10} {row['model']:20} {row['deployment']:16} {row['state']:8} "
                     f"weight {row['weight']:.3f}  ttft {row['ttft_ms']:.0f} ms  tpot {row['tpot_ms']:.1f} ms  "
                     f"errors {row['error_rate']:.1%}{reason}")
    return "\n".join(lines)
