"""A router that persisted a table its control plane never wrote recovers without an operator, all real processes:
a huge version with the cluster's own identity (a rogue stream's), the table of another etcd cluster (etcd
rebuilt), and a table stored before tables carried their cluster. Each time the router restarts from that table,
takes the control plane's, says so in its log, and follows the next policy push."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.control_plane_stack import MODEL, ControlPlaneStack, chat, http_json, wait_for
from data_plane.table.store import TableStore

pytestmark = pytest.mark.integration

ROUTER = "router-eu-west-1"
HUGE = 2**62


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneStack]:
    stack = ControlPlaneStack(tmp_path_factory.mktemp("resync"), lease_ttl_s=2.0)
    try:
        stack.start(routers_per_region=1)
        yield stack
    finally:
        stack.stop()


def _store(stack: ControlPlaneStack) -> TableStore:
    return TableStore(stack.workdir / "state" / ROUTER / "table-eu-west.bin")


def _restart_with_stored(stack: ControlPlaneStack, version: int, cluster: str) -> tuple[int, int, int]:
    """Stops the router, rewrites its stored table's version and cluster, starts it again; returns the real
    table's (version, cluster) it held before, and where the restarted router's log begins."""
    stack.routers[ROUTER].stop()
    log_offset = stack.routers[ROUTER].log_path.stat().st_size
    stored = _store(stack).load()
    assert stored is not None and stored.cluster_id, "tables from the control plane carry their cluster"
    real = (stored.version, stored.cluster_id)
    stored.version = version
    stored.cluster_id = {"same": stored.cluster_id, "other": stored.cluster_id ^ 0xFFFF, "none": 0}[cluster]
    stored.source = "control-plane"
    _store(stack).save(stored)
    stack.start_router(ROUTER, "eu-west")
    return (*real, log_offset)


@pytest.mark.parametrize(
    ("cluster", "router_says", "budget_ms"),
    [("same", "table_history_rewound", 701), ("other", "table_cluster_changed", 702), ("none", None, 703)],
    ids=["huge-version-of-this-cluster", "table-of-another-cluster", "stored-before-clusters"],
)
def test_a_router_holding_a_table_its_cluster_never_wrote_takes_the_real_one(
    stack: ControlPlaneStack, cluster: str, router_says: str | None, budget_ms: int
) -> None:
    real_version, real_cluster, log_offset = _restart_with_stored(stack, HUGE, cluster)
    router = stack.routers[ROUTER]
    table = wait_for(lambda: (t := stack.routing(router)["table"])["version"] < HUGE and t,
                     "the router to give up the table its cluster never wrote", timeout_s=10)
    assert table["source"] == "control-plane" and table["cluster_id"] == f"{real_cluster:x}"
    assert table["version"] >= real_version
    log = router.log_path.read_text()[log_offset:]
    for event in ("table_history_rewound", "table_cluster_changed"):
        assert (event in log) is (event == router_says), log[-2000:]
    if cluster == "same":
        replicas = "".join(r.log_path.read_text() for r in stack.replicas.values())
        assert f"router_beyond_cluster router={ROUTER}" in replicas and f"held_version={HUGE}" in replicas
    # The router saves a table after it has applied and acknowledged it, off the event loop: wait for the save.
    wait_for(lambda: (stored := _store(stack).load()) is not None and stored.version == table["version"],
             "the real table persisted in place of the one its cluster never wrote", timeout_s=5)

    status, reply = http_json("POST", f"{stack.admin_url()}/v1/policy/set",
                              {"region": "eu-west", "model": MODEL, "policy": "cost-first",
                               "latency_budget_ms": budget_ms}, token=stack.token)
    assert status == 200, reply
    wait_for(lambda: stack.routing(router)["models"][MODEL]["latency_budget_ms"] == budget_ms,
             "the next push to reach the router", timeout_s=5)
    assert chat(router.url) == 200


def test_without_etcd_a_router_keeps_what_it_holds(stack: ControlPlaneStack) -> None:
    """Nothing can prove a table wrong while etcd is away: the router serves the one it holds, however high."""
    assert stack.etcd is not None
    stack.etcd.stop()  # the last test of this module: the stack has no etcd from here on
    _restart_with_stored(stack, HUGE, "same")
    router = stack.routers[ROUTER]
    wait_for(lambda: "table_read_failed region=eu-west" in "".join(r.log_path.read_text()
                                                                   for r in stack.replicas.values()),
             "the replica to try etcd for the router's region", timeout_s=10)
    assert stack.routing(router)["table"]["version"] == HUGE
    assert chat(router.url) == 200
