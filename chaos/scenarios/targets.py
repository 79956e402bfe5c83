"""How scenarios pick what to break: pure choices over the stack and the baseline recorded so far."""

from __future__ import annotations

from collections.abc import Iterable

from harness.stack_handle import ChaosActionError, StackHandle
from harness.timeline import Timeline, share_by_backend


def busiest_backend(handle: StackHandle, baseline: Timeline, candidates: Iterable[str] | None = None) -> str:
    """The backend that served the most of the baseline among `candidates` (default all) whose model has
    another deployment to move to; ties by name."""
    models: dict[str, int] = {}
    for info in handle.backends.values():
        models[info["model"]] = models.get(info["model"], 0) + 1
    pool = sorted(name for name in (candidates if candidates is not None else handle.backends)
                  if models.get(handle.backends[name]["model"], 0) > 1)
    if not pool:
        raise ChaosActionError("no backend whose model has another deployment: nothing could take its traffic")
    share = share_by_backend(baseline.requests)
    return max(pool, key=lambda name: (share.get(name, 0.0), name))


def deployment_facts(handle: StackHandle) -> dict[str, object]:
    return {"deployment_regions": {name: info["region"] for name, info in handle.backends.items()},
            "rtt_ms": handle.rtt_ms}
