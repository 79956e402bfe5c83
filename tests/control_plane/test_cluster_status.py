"""Pure parts of the replica: status assembly, what to publish, bearer tokens, where the CLI finds the API."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from replica_fixtures import config_document

from control_plane.admin.client import AdminCallError
from control_plane.admin.cluster_status import LocalView, assemble_status
from control_plane.admin.service import bearer_of, token_matches
from control_plane.config import parse_control_plane_config
from control_plane.election.campaign import LeaderInfo
from control_plane.election.identity import CandidateIdentity
from control_plane.etcd_keys import EtcdKeys, ReplicaRecord, decode_table, encode_table
from control_plane.tables.compute import ComputeState, compute_tables
from control_plane.tables.publisher import tables_to_publish
from meridian_cli import policy as policy_cli
from meridian_cli import status as status_cli
from meridian_cli._admin_target import resolve_target
from meridian_proto import policy_pb2, routing_pb2

A = ReplicaRecord("cp-a", 11, "http://127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", 0)
B = ReplicaRecord("cp-b", 22, "http://127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:6", 0)
LEADER = LeaderInfo(CandidateIdentity("cp-a", 11, A.admin, A.grpc).encode(), epoch=7, mod_revision=7, lease_id=1)


def router(router_id: str, replica: str, version: int, acked_at_ms: int) -> dict[str, object]:
    return {"router_id": router_id, "region": "eu-west", "url": "http://r:1", "version": version,
            "replica_id": replica, "last_nack": "", "acked_at_unix_ms": acked_at_ms}


def local(record: ReplicaRecord, role: str = "follower") -> LocalView:
    return LocalView(record, role, False, "not the leader", 0)


def test_status_names_the_leader_roles_and_each_router_once_with_its_newest_ack() -> None:
    status = assemble_status(
        leader=LEADER, replicas=[A, B], tables=[], local=local(B), etcd_error="", now_unix_s=100.0,
        router_lists=[[router("r1", "cp-a", 5, 90_000)],
                      [router("r1", "cp-b", 6, 95_000), router("r2", "cp-b", 6, 99_000)]],
    )
    assert status["leader"] == {"id": "cp-a", "epoch": 7, "pid": 11, "admin": A.admin, "grpc": A.grpc}
    assert [(r["id"], r["role"]) for r in status["replicas"]] == [("cp-a", "leader"), ("cp-b", "follower")]
    assert [(r["router_id"], r["version"], r["replica_id"], r["age_s"]) for r in status["routers"]] == [
        ("r1", 6, "cp-b", 5.0), ("r2", 6, "cp-b", 1.0)]


def test_without_etcd_only_this_replica_is_listed_without_quorum() -> None:
    status = assemble_status(leader=None, replicas=[], router_lists=[], tables=[], local=local(B, "no-quorum"),
                             etcd_error="etcd unreachable (ConnectionFailedError)", now_unix_s=1.0)
    assert status["leader"] is None and status["etcd"]["reachable"] is False
    assert [(r["id"], r["role"]) for r in status["replicas"]] == [("cp-b", "no-quorum")]


def test_backends_show_the_tables_ttft_and_tpot() -> None:
    table = routing_pb2.RoutingTable(region="eu-west", models=[routing_pb2.ModelRoute(
        model="llama-3.3-70b", deployments=[routing_pb2.Deployment(
            name="vllm-a", region="eu-west", weight=0.62, ttft_ms=412.34, tpot_ms=21.456, reason="derived")])])
    status = assemble_status(leader=LEADER, replicas=[A], router_lists=[], tables=[table], local=local(A, "leader"),
                             etcd_error="", now_unix_s=1.0)
    (row,) = status["backends"]
    assert (row["state"], row["ttft_ms"], row["tpot_ms"]) == ("active", 412.3, 21.46) and "p95_ms" not in row
    assert "weight 0.620  ttft 412 ms  tpot 21.5 ms  errors 0.0%" in status_cli.render(status)


def test_policy_set_takes_the_ttft_and_tpot_thresholds_not_a_whole_answer_p95() -> None:
    parser = argparse.ArgumentParser()
    policy_cli.register(parser.add_subparsers())
    common = ["policy", "set", "--region", "eu-west", "--model", "llama-3.3-70b"]
    args = parser.parse_args([*common, "--max-ttft-p95-ms", "1500", "--max-tpot-p95-ms", "60"])
    assert (args.max_ttft_p95_ms, args.max_tpot_p95_ms) == (1500.0, 60.0)
    with pytest.raises(SystemExit):
        parser.parse_args([*common, "--max-p95-ms", "5000"])


def test_only_material_changes_are_published_and_stamped_with_the_epoch() -> None:
    config = parse_control_plane_config(config_document("http://127.0.0.1:1", "redis://127.0.0.1:2/0", "/p"), "t")
    tables, state = compute_tables(config, policy_pb2.PolicyDocument(), {}, ComputeState(), 1000.0)
    first = tables_to_publish({}, tables, epoch=9)
    assert sorted(first) == ["eu-west", "us-east"] and all(t.epoch == 9 and t.version == 0 for t in first.values())
    again, _ = compute_tables(config, policy_pb2.PolicyDocument(), {}, state, 1001.0)
    assert tables_to_publish(first, again, epoch=9) == {}
    policy = policy_pb2.PolicyDocument(models=[policy_pb2.ModelPolicy(region="us-east", model="llama-3.3-70b",
                                                                      policy="cost-first")])
    changed, _ = compute_tables(config, policy, {}, state, 1001.0)
    assert list(tables_to_publish(first, changed, epoch=9)) == ["us-east"]
    assert sorted(tables_to_publish(first, again, epoch=12)) == ["eu-west", "us-east"]  # a new leader announces


def test_a_stored_table_takes_its_version_from_the_key_and_its_cluster_from_the_read() -> None:
    keys = EtcdKeys("/meridian")
    assert keys.table("eu-west") == b"/meridian/tables/eu-west" and keys.region_of(keys.table("eu-west")) == "eu-west"
    assert keys.revision_of(keys.policy_version(42)) == 42
    config = parse_control_plane_config(config_document("http://127.0.0.1:1", "redis://127.0.0.1:2/0", "/p"), "t")
    table = compute_tables(config, policy_pb2.PolicyDocument(), {}, ComputeState(), 1.0)[0]["eu-west"]
    table.version, table.cluster_id = 123, 0xAB
    stored = routing_pb2.RoutingTable.FromString(encode_table(table))
    assert (stored.version, stored.cluster_id) == (0, 0), "neither is stored: etcd's read says what they are"
    read = decode_table(encode_table(table), 77, 0xC1)
    assert (read.version, read.cluster_id) == (77, 0xC1)


@pytest.mark.parametrize(("header", "expected", "ok"), [
    ("Bearer abc", "abc", True), ("bearer abc", "abc", True), ("Bearer abd", "abc", False),
    ("Basic abc", "abc", False), (None, "abc", False), ("Bearer abc", None, False), ("Bearer ", "", False),
])
def test_bearer_tokens(header: str | None, expected: str | None, ok: bool) -> None:
    assert token_matches(bearer_of(header), expected) is ok


def _args(**values: object) -> argparse.Namespace:
    return argparse.Namespace(**{"admin": None, "token_env": None, "ca_file": None, **values})


def test_the_cli_finds_the_admin_api_in_flags_then_env_then_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / ".meridian").mkdir()
    (tmp_path / ".meridian" / "stack.json").write_text(
        '{"control_plane": {"admin": ["http://a:1", "http://b:2/"]}, "admin_token": "from-stack"}')
    target = resolve_target(_args(), {}, tmp_path)
    assert target.urls == ("http://a:1", "http://b:2") and target.token == "from-stack"
    target = resolve_target(_args(), {"MERIDIAN_ADMIN_URL": "http://c:3,http://d:4", "MERIDIAN_ADMIN_TOKEN": "e"},
                            tmp_path)
    assert target.urls == ("http://c:3", "http://d:4") and target.token == "e"
    target = resolve_target(_args(admin=["http://f:5"], token_env="MINE"), {"MINE": "tok-9f3"}, tmp_path)
    assert target.urls == ("http://f:5",) and target.token == "tok-9f3" and "tok-9f3" not in repr(target)
    with pytest.raises(AdminCallError, match="MISSING"):
        resolve_target(_args(admin=["http://f:5"], token_env="MISSING"), {}, tmp_path)
    with pytest.raises(AdminCallError, match="no admin API URL"):
        resolve_target(_args(), {}, tmp_path / "elsewhere")
