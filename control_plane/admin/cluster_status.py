"""What `meridian status` shows: the leader and its epoch, every replica, every router with the version it
applied, the tables and the backends' state. Any replica can answer for all of them.

Each replica only knows the routers connected to it, so each one writes that list to
`<prefix>/routers/<replica id>` on its session lease (replica_registry.py), and whichever replica is asked
reads every list. A replica that dies takes its list with it within a lease TTL; the routers it served
reconnect to another replica and show up there. `assemble_status` is the pure part.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd

from control_plane.distribution.table_cache import RouterStatus
from control_plane.election.campaign import LeaderInfo, read_leader
from control_plane.election.identity import CandidateIdentity
from control_plane.etcd_client import EtcdClient
from control_plane.etcd_keys import EtcdKeys, ReplicaRecord
from meridian_proto import policy_pb2, routing_pb2

ETCD_READ_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class LocalView:
    """What the answering replica knows about itself without asking etcd."""

    replica: ReplicaRecord
    role: str
    publishing: bool
    publishing_reason: str
    policy_version: int


def router_entries(statuses: Iterable[RouterStatus], now_unix_s: float) -> list[dict[str, Any]]:
    """The connected routers of one replica, as written to etcd: ACK times are absolute so that a reader
    computes the age at its own `now`."""
    entries = []
    for status in statuses:
        if not status.connected:
            continue
        nack = f"{status.last_nack_version}: {status.last_nack_reason}" if status.last_nack_version else ""
        entries.append({
            "router_id": status.router_id, "region": status.region, "url": status.url,
            "version": status.acked_version, "replica_id": status.replica_id, "last_nack": nack,
            "acked_at_unix_ms": round((now_unix_s - status.age_since_ack_s) * 1000),
        })
    return entries


def _leader_json(leader: LeaderInfo | None) -> dict[str, Any] | None:
    if leader is None:
        return None
    try:
        identity = CandidateIdentity.decode(leader.value)
    except (ValueError, KeyError, TypeError):
        return {"id": "?", "epoch": leader.epoch, "pid": 0, "admin": "", "grpc": ""}
    return {"id": identity.id, "epoch": leader.epoch, "pid": identity.pid, "admin": identity.admin_url,
            "grpc": identity.grpc_url}


def _table_json(table: routing_pb2.RoutingTable, now_unix_s: float) -> dict[str, Any]:
    age = max(0.0, now_unix_s - table.computed_at_unix_ms / 1000) if table.computed_at_unix_ms else None
    return {"region": table.region, "version": table.version, "epoch": table.epoch,
            "cluster_id": f"{table.cluster_id:x}", "age_s": None if age is None else round(age, 3),
            "content_hash": table.content_hash, "source": table.source}


def _backends(tables: Iterable[routing_pb2.RoutingTable]) -> list[dict[str, Any]]:
    rows = []
    for table in tables:
        for route in table.models:
            for deployment in route.deployments:
                state = "ejected" if deployment.ejected else ("probing" if deployment.reason.startswith("probing")
                                                              else "active")
                rows.append({
                    "region": table.region, "model": route.model, "deployment": deployment.name,
                    "deployment_region": deployment.region, "state": state,
                    "weight": round(deployment.weight, 4), "ttft_ms": round(deployment.ttft_ms, 1),
                    "tpot_ms": round(deployment.tpot_ms, 2), "error_rate": round(deployment.error_rate, 4),
                    "reason": deployment.reason,
                })
    return rows


def assemble_status(
    *,
    leader: LeaderInfo | None,
    replicas: Sequence[ReplicaRecord],
    router_lists: Iterable[Sequence[Mapping[str, Any]]],
    tables: Sequence[routing_pb2.RoutingTable],
    local: LocalView,
    etcd_error: str,
    now_unix_s: float,
) -> dict[str, Any]:
    """The status document (the JSON of GET /v1/status). Without etcd, only this replica is listed, with the
    role `no-quorum`, and the routers connected to it."""
    leader_json = _leader_json(leader)
    leader_id = leader_json["id"] if leader_json else None
    listed = {r.id: r for r in replicas}
    listed.setdefault(local.replica.id, local.replica)
    replica_rows = []
    for record in sorted(listed.values(), key=lambda r: r.id):
        if etcd_error:
            role = "no-quorum" if record.id == local.replica.id else "unknown"
        else:
            role = "leader" if record.id == leader_id else "follower"
        row = {"id": record.id, "pid": record.pid, "admin": record.admin, "grpc": record.grpc,
               "admin_grpc": record.admin_grpc, "role": role}
        replica_rows.append(row)
    # A router that moved between replicas may be listed by both for a moment: keep its newest ACK.
    routers: dict[str, dict[str, Any]] = {}
    for entries in router_lists:
        for entry in entries:
            current = routers.get(str(entry["router_id"]))
            if current is None or int(entry["acked_at_unix_ms"]) > int(current["acked_at_unix_ms"]):
                routers[str(entry["router_id"])] = dict(entry)
    router_rows = []
    for entry in sorted(routers.values(), key=lambda e: (e["region"], e["router_id"])):
        age = max(0.0, now_unix_s - int(entry.pop("acked_at_unix_ms")) / 1000)
        router_rows.append({**entry, "age_s": round(age, 3)})
    ordered = sorted(tables, key=lambda t: t.region)
    return {
        "leader": leader_json,
        "replicas": replica_rows,
        "routers": router_rows,
        "tables": [_table_json(t, now_unix_s) for t in ordered],
        "backends": _backends(ordered),
        "this_replica": {"id": local.replica.id, "role": local.role, "publishing": local.publishing,
                         "reason": local.publishing_reason, "policy_version": local.policy_version},
        "etcd": {"reachable": not etcd_error, "error": etcd_error},
    }


async def gather_status(
    client: EtcdClient,
    keys: EtcdKeys,
    tables: Sequence[routing_pb2.RoutingTable],
    local_routers: Sequence[Mapping[str, Any]],
    local: LocalView,
    now_unix_s: float,
) -> dict[str, Any]:
    leader: LeaderInfo | None = None
    replicas: list[ReplicaRecord] = []
    router_lists: list[Sequence[Mapping[str, Any]]] = []
    etcd_error = ""
    try:
        async with asyncio.timeout(ETCD_READ_TIMEOUT_S):
            leader, _ = await read_leader(client, keys.prefix)
            for kv in await client.get_prefix(keys.replicas):
                replicas.append(ReplicaRecord.decode(kv.value))
            for kv in await client.get_prefix(keys.routers):
                if keys.routers_of(local.replica.id) != kv.key:
                    router_lists.append(json.loads(kv.value))
    except (aetcd.ClientError, TimeoutError, OSError) as error:
        etcd_error = f"etcd unreachable ({type(error).__name__})"
        leader, replicas, router_lists = None, [], []
    # Our own routers come from memory: fresher than our last write to etcd, and there without etcd.
    router_lists.append(local_routers)
    return assemble_status(leader=leader, replicas=replicas, router_lists=router_lists, tables=tables,
                           local=local, etcd_error=etcd_error, now_unix_s=now_unix_s)


def status_proto(status: Mapping[str, Any], tables: Sequence[routing_pb2.RoutingTable]) -> policy_pb2.StatusResponse:
    """The status document as the gRPC Admin.Status answer."""
    response = policy_pb2.StatusResponse(tables=list(tables))
    leader = status["leader"]
    if leader is not None:
        response.leader.CopyFrom(policy_pb2.ReplicaStatus(
            id=leader["id"], pid=leader["pid"], admin=leader["admin"], grpc=leader["grpc"], role="leader",
            epoch=leader["epoch"]))
    for row in status["replicas"]:
        epoch = leader["epoch"] if leader is not None and row["role"] == "leader" else 0
        response.replicas.append(policy_pb2.ReplicaStatus(id=row["id"], pid=row["pid"], admin=row["admin"],
                                                          grpc=row["grpc"], role=row["role"], epoch=epoch))
    for row in status["routers"]:
        response.routers.append(policy_pb2.RouterStatus(
            router_id=row["router_id"], region=row["region"], url=row["url"], version=row["version"],
            age_s=row["age_s"], replica_id=row["replica_id"], last_nack=row["last_nack"]))
    return response
