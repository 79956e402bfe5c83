"""What makes a replica rewrite its router list in etcd: a change of routers, versions or NACKs, never an ACK
time alone (each write is a revision etcd keeps until it compacts)."""

from __future__ import annotations

import pytest

from control_plane.replica_registry import RouterEntry, material


def entry(router_id: str = "eu-1", version: int = 7, acked_at_unix_ms: int = 1_000, last_nack: str = "",
          url: str = "http://127.0.0.1:8081") -> RouterEntry:
    return {"router_id": router_id, "region": "eu-west", "url": url, "version": version, "replica_id": "cp-1",
            "last_nack": last_nack, "acked_at_unix_ms": acked_at_unix_ms}


@pytest.mark.parametrize(
    ("before", "after", "rewritten"),
    [
        ([entry()], [entry()], False),
        ([entry()], [entry(acked_at_unix_ms=9_000)], False),
        ([entry()], [entry(version=8, acked_at_unix_ms=9_000)], True),
        ([entry()], [entry(last_nack="8: older than held version 9")], True),
        ([entry()], [entry(), entry("eu-2")], True),
        ([entry(), entry("eu-2")], [entry()], True),
        ([entry()], [entry(url="http://127.0.0.1:9999")], True),
        ([], [], False),
    ],
    ids=["unchanged", "ack-time-only", "new-version", "new-nack", "router-joined", "router-left", "moved",
         "still-empty"],
)
def test_only_material_changes_are_rewritten(before: list[RouterEntry], after: list[RouterEntry],
                                             rewritten: bool) -> None:
    assert (material(after) != material(before)) is rewritten


def test_material_keeps_every_field_a_reader_shows_but_the_ack_time() -> None:
    assert material([entry()]) == [{key: value for key, value in entry().items() if key != "acked_at_unix_ms"}]
