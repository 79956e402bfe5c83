"""Where the control plane keeps its state in etcd, and how a version is read back from a key.

    <prefix>/leader                    the leader's CandidateIdentity (election/identity.py), on its session lease
    <prefix>/tables/<region>           serialized RoutingTable, written by the leader's fenced transaction
    <prefix>/policy/current            serialized PolicyDocument in force
    <prefix>/policy/history/<revision> a superseded PolicyDocument, named by the revision it was written at
    <prefix>/replicas/<replica id>     JSON registration of a running replica, on its session lease
    <prefix>/routers/<replica id>      JSON list of the routers connected to that replica, on its lease

Tables and the current policy are stored with version 0: the version of what a key holds is the key's
mod_revision, which only etcd knows once the write committed. Whoever reads the key sets it. That makes a
version unique per write, monotonic across leaders, and impossible to forge by writing a number. A table's
cluster_id is set the same way, from the header of the read: versions compare only within one etcd cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meridian_proto import policy_pb2, routing_pb2


@dataclass(frozen=True, slots=True)
class EtcdKeys:
    prefix: str

    @property
    def leader(self) -> bytes:
        return f"{self.prefix}/leader".encode()

    @property
    def tables(self) -> bytes:
        return f"{self.prefix}/tables/".encode()

    def table(self, region: str) -> bytes:
        return self.tables + region.encode()

    def region_of(self, table_key: bytes) -> str:
        return table_key[len(self.tables):].decode()

    @property
    def policy_current(self) -> bytes:
        return f"{self.prefix}/policy/current".encode()

    @property
    def policy_history(self) -> bytes:
        return f"{self.prefix}/policy/history/".encode()

    def policy_version(self, revision: int) -> bytes:
        # Zero-padded so that etcd's key order is version order.
        return self.policy_history + f"{revision:020d}".encode()

    def revision_of(self, history_key: bytes) -> int:
        return int(history_key[len(self.policy_history):])

    @property
    def replicas(self) -> bytes:
        return f"{self.prefix}/replicas/".encode()

    def replica(self, replica_id: str) -> bytes:
        return self.replicas + replica_id.encode()

    @property
    def routers(self) -> bytes:
        return f"{self.prefix}/routers/".encode()

    def routers_of(self, replica_id: str) -> bytes:
        return self.routers + replica_id.encode()


def decode_table(value: bytes, mod_revision: int, cluster_id: int) -> routing_pb2.RoutingTable:
    """A stored table with its version set from the key's mod_revision and its cluster_id from the header of the
    read. Raises DecodeError."""
    table = routing_pb2.RoutingTable()
    table.ParseFromString(value)
    table.version = mod_revision
    table.cluster_id = cluster_id
    return table


def encode_table(table: routing_pb2.RoutingTable) -> bytes:
    stored = routing_pb2.RoutingTable()
    stored.CopyFrom(table)
    stored.version = 0
    stored.cluster_id = 0
    return stored.SerializeToString(deterministic=True)


def decode_policy(value: bytes, mod_revision: int | None = None) -> policy_pb2.PolicyDocument:
    """A stored policy document; `mod_revision` (for the current key) becomes its version."""
    document = policy_pb2.PolicyDocument()
    document.ParseFromString(value)
    if mod_revision is not None:
        document.version = mod_revision
    return document


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """What `<prefix>/replicas/<id>` holds: enough for `meridian status` to list and reach a replica."""

    id: str
    pid: int
    admin: str
    grpc: str
    admin_grpc: str
    started_at_unix_ms: int

    def encode(self) -> bytes:
        return json.dumps(self.as_dict(), sort_keys=True).encode()

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "admin": self.admin, "grpc": self.grpc,
                "admin_grpc": self.admin_grpc, "started_at_unix_ms": self.started_at_unix_ms}

    @classmethod
    def decode(cls, value: bytes) -> ReplicaRecord:
        fields = json.loads(value)
        return cls(str(fields["id"]), int(fields["pid"]), str(fields["admin"]), str(fields["grpc"]),
                   str(fields.get("admin_grpc", "")), int(fields.get("started_at_unix_ms", 0)))
