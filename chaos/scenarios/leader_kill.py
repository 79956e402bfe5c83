"""The control-plane leader is SIGKILLed (no resignation): a follower takes over when the lease expires,
versions never go backwards, clients never notice. The killed replica is started again afterwards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from harness.stack_handle import ChaosActionError, StackHandle
from harness.timeline import Timeline


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    leader = handle.leader()
    if leader is None:
        raise ChaosActionError("no replica says it is the leader: nothing to kill")
    pid = handle.kill_replica(leader)
    return {"killed_replica": leader, "pid": pid, "lease_ttl_s": handle.lease_ttl_s()}


SCENARIO = Scenario(
    name="leader-kill",
    description="SIGKILL of the replica whose /health says leader; it cannot resign, so its lease must expire.",
    injects="SIGKILL the leader's pid; restart it on its ports after the fault window",
    inject=inject,
    checks=(checks.new_leader_within_lease(), checks.versions_never_go_backwards(), checks.zero_client_errors()),
)
