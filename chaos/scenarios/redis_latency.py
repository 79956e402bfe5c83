"""500 ms added to every Redis link: the clients' time to first token must not move, since Redis is off the
request path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario, StackFeature
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

ADDED_LATENCY_MS = 500
# Far below the 500 ms injected, above what two cores' scheduling noise adds to a short run.
ALLOWED_P50_MS = 50.0
ALLOWED_P95_MS = 150.0


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    proxies = [p.name for p in handle.proxies(kind="redis") + handle.proxies(kind="redis-cp")]
    for name in proxies:
        handle.add_toxic(name, "chaos_redis_latency", "latency", "downstream", {"latency": ADDED_LATENCY_MS})
    return {"proxies": proxies, "added_latency_ms": ADDED_LATENCY_MS}


SCENARIO = Scenario(
    name="redis-latency",
    description=f"{ADDED_LATENCY_MS} ms of latency on every answer from Redis. Nothing on a request's path "
                "waits for Redis, so the clients' time to first token stays where it was.",
    injects=f"latency toxic {ADDED_LATENCY_MS} ms (downstream) on the redis-<region> and redis-cp proxies",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.ttft_unchanged(ALLOWED_P50_MS, ALLOWED_P95_MS)),
    needs=frozenset({StackFeature.PROXIED_REDIS}),
)
