"""One member of a 3-member etcd cluster is SIGKILLed: the one the leader talks to. The replicas move to the
next member; the leader keeps leading (or another leads within the lease TTL), policy pushes made during the
fault reach the routers, clients never notice. The member is started again afterwards and rejoins."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario, StackFeature
from harness.stack_handle import ChaosActionError, StackHandle
from harness.timeline import Timeline

PUSH_LIMIT_S = 2.0
PUSHED_BUDGETS_MS = (4001, 4002, 4003)
PUSH_GAP_S = 0.8


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    leader = handle.leader()
    if leader is None:
        raise ChaosActionError("no replica says it is the leader: no member to take from under it")
    member = handle.etcd_member_in_use(leader)
    pid = handle.kill_etcd_member(member)
    region, model = handle.regions[0], next(iter(handle.topology.models))
    # Pushed at once and then while the replicas settle on another member: the first push meets the move.
    for budget in PUSHED_BUDGETS_MS:
        handle.push_policy(region, model, latency_budget_ms=budget)
        time.sleep(PUSH_GAP_S)
    return {"leader": leader, "killed_member": member, "pid": pid, "lease_ttl_s": handle.lease_ttl_s()}


SCENARIO = Scenario(
    name="etcd-member-loss",
    description="SIGKILL of the etcd member the leader talks to, in a 3-member cluster that keeps its quorum.",
    injects="SIGKILL the leader's etcd member; push policies; restart the member after the fault window",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.leadership_holds("etcd_member_killed"),
            checks.policy_pushes_reach_routers(PUSH_LIMIT_S), checks.versions_never_go_backwards()),
    # Long enough to see the lease TTL (3 s) + 1 s pass after the kill.
    min_fault_s=5.0,
    needs=frozenset({StackFeature.ETCD_CLUSTER}),
)
