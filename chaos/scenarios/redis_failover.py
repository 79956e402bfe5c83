"""The Redis primary of a Sentinel group is SIGKILLed: the sentinels promote the replica, and every Redis user
(telemetry, shared rate limits, jobs) finds the new primary; clients never notice, and no accepted job is lost.
The killed server is started again afterwards as a replica of the new primary."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario, StackFeature
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

LIMIT_S = 5.0
JOBS_BEFORE = 4
SUBMIT_EVERY_S = 0.25
SUBMIT_WINDOW_S = 6.0
SETTLE_WITHIN_S = 25.0


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    rng = random.Random("redis-failover")
    routers = sorted(handle.routers)
    accepted = [(router, job) for i in range(JOBS_BEFORE)
                if (job := handle.submit_job(router := routers[i % len(routers)], rng)) is not None]
    primary = handle.redis_primary()
    pid = handle.kill_redis_server(primary)
    # Clients keep submitting through the failover: refusals are allowed, accepted jobs must be kept.
    started = time.monotonic()
    for index in range(int(SUBMIT_WINDOW_S / SUBMIT_EVERY_S)):
        router = routers[index % len(routers)]
        if (job := handle.submit_job(router, rng)) is not None:
            accepted.append((router, job))
        time.sleep(max(0.0, started + (index + 1) * SUBMIT_EVERY_S - time.monotonic()))
    handle.settle_jobs(accepted, SETTLE_WITHIN_S)
    return {"killed_primary": primary, "pid": pid, "new_primary": handle.redis_primary()}


SCENARIO = Scenario(
    name="redis-failover",
    description="SIGKILL of the Redis primary of a Sentinel group; the sentinels promote the replica.",
    injects="SIGKILL the Redis primary; submit jobs through the failover; restart it as a replica afterwards",
    inject=inject,
    checks=(
        checks.zero_client_errors(),
        checks.redis_writes_resume_within("telemetry", LIMIT_S, "redis_server_killed"),
        checks.redis_writes_resume_within("rate limits", LIMIT_S, "redis_server_killed"),
        checks.jobs_accepted_again_within(LIMIT_S, "redis_server_killed"),
        checks.no_job_lost(),
    ),
    needs=frozenset({StackFeature.REDIS_SENTINEL}),
)
