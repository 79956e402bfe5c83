"""etcd cut from every replica: routers serve, nobody publishes without proving leadership, publishing
resumes after recovery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from harness.stack_handle import StackHandle
from harness.timeline import Timeline


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    proxies = [p.name for p in handle.proxies(kind="etcd")]
    for name in proxies:
        handle.disable_proxy(name)
    return {"proxies": proxies, "lease_ttl_s": handle.lease_ttl_s()}


SCENARIO = Scenario(
    name="etcd-loss",
    description="The control plane loses etcd: no replica can prove leadership, so none may publish.",
    injects="disable the etcd proxy",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.no_publication_without_leadership(),
            checks.versions_never_go_backwards(), checks.publishing_resumes()),
    # The cut must outlast the lease (3 s by default) + 1 s for leadership to lapse visibly; re-electing after
    # etcd returns took 1 to 4 s in the local stack (the etcd client's reconnect backoff).
    min_fault_s=5.5,
    min_recovery_s=8.0,
)
