"""`meridian bench propagation` (policy push -> every router applied it) and `meridian bench failover`
(SIGKILL of the leader -> first table of the new leader at the routers, with the client errors meanwhile)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.control_plane_stack import CHAT_SHAPE, MODEL, REGIONS, ControlPlaneStack, chat, wait_for
from benchmarks.load import percentile
from control_plane.admin.client import AdminTarget, call


def push_policy(stack: ControlPlaneStack, budget_ms: int) -> None:
    document = "models:\n" + "".join(
        f"  - {{region: {region}, model: {MODEL}, policy: cost-first, latency_budget_ms: {budget_ms}}}\n"
        for region in REGIONS)
    call(AdminTarget((stack.admin_url(),), stack.token, "the bench's stack"), "POST", "/v1/policy", {"yaml": document})


def _applied_everywhere(stack: ControlPlaneStack, budget_ms: int) -> bool:
    return all(stack.routing(r)["models"][MODEL]["latency_budget_ms"] == budget_ms for r in stack.routers.values())


def run_propagation(pushes: int, routers_per_region: int, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        stack = ControlPlaneStack(Path(tmp))
        try:
            progress(f"starting etcd, Redis, 2 replicas and {routers_per_region * len(REGIONS)} routers ...")
            stack.start(routers_per_region)
            delays_ms: list[float] = []
            for push in range(pushes):
                budget_ms = 1000 + push
                started = time.perf_counter()
                push_policy(stack, budget_ms)
                wait_for(lambda b=budget_ms: _applied_everywhere(stack, b), f"push {push} to reach every router",
                         timeout_s=10, interval_s=0.002)
                delays_ms.append((time.perf_counter() - started) * 1000)
                progress(f"  push {push + 1}/{pushes}: {delays_ms[-1]:.1f} ms")
            return {"p50_ms": round(percentile(delays_ms, 50), 2), "p99_ms": round(percentile(delays_ms, 99), 2),
                    "max_ms": round(max(delays_ms), 2), "pushes": pushes, "routers": len(stack.routers)}
        finally:
            stack.stop()


def run_failover(lease_ttl_s: float, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        stack = ControlPlaneStack(Path(tmp), lease_ttl_s=lease_ttl_s)
        try:
            progress("starting etcd, Redis, 2 replicas and 2 routers ...")
            stack.start(1)
            old_leader = wait_for(stack.leader, "a leader")
            epochs = {name: stack.routing(r)["table"]["epoch"] for name, r in stack.routers.items()}
            statuses: list[int] = []
            stop = threading.Event()

            def traffic(url: str) -> None:
                deadline = time.monotonic() + lease_ttl_s + 15
                while not stop.is_set() and time.monotonic() < deadline:
                    statuses.append(chat(url))

            senders = [threading.Thread(target=traffic, args=(r.url,)) for r in stack.routers.values()]
            for sender in senders:
                sender.start()
            try:
                time.sleep(0.5)
                progress(f"SIGKILL of the leader {old_leader} ...")
                killed_at = time.perf_counter()
                stack.replicas[old_leader].kill()
                wait_for(lambda: all(stack.routing(r)["table"]["epoch"] > epochs[n] for n, r in stack.routers.items()),
                         "every router to hold a table of the new leader", timeout_s=lease_ttl_s + 10,
                         interval_s=0.01)
                failover_s = time.perf_counter() - killed_at
                time.sleep(0.5)
            finally:
                stop.set()
                for sender in senders:
                    sender.join()
            return {"failover_s": round(failover_s, 3), "lease_ttl_s": lease_ttl_s,
                    "new_leader": stack.leader(), "client_errors": sum(1 for s in statuses if s != 200),
                    "requests": len(statuses),
                    "client_workload": f"{CHAT_SHAPE.answer_tokens}-token answers to {CHAT_SHAPE.prompt_tokens}-"
                                       "token prompts, not streamed: tiny on purpose, the bench measures the "
                                       "control plane"}
        finally:
            stack.stop()


def propagation_table(figures: dict[str, Any]) -> str:
    ok = figures["p99_ms"] < 500
    return (f"policy push -> every router applied it, {figures['pushes']} pushes, {figures['routers']} routers\n"
            f"  p50 {figures['p50_ms']} ms   p99 {figures['p99_ms']} ms   max {figures['max_ms']} ms\n"
            f"{'PASS' if ok else 'MISS'}  p99_ms = {figures['p99_ms']} (target < 500)")


def failover_table(figures: dict[str, Any]) -> str:
    bound = figures["lease_ttl_s"] + 1
    ok = figures["failover_s"] < bound and figures["client_errors"] == 0
    return (f"SIGKILL of the leader -> first table of the new leader ({figures['new_leader']}) at every router\n"
            f"  failover {figures['failover_s']} s (lease TTL {figures['lease_ttl_s']} s); "
            f"client errors {figures['client_errors']} of {figures['requests']} requests\n"
            f"  client requests: {figures['client_workload']}\n"
            f"{'PASS' if ok else 'MISS'}  failover_s < {bound} and client_errors == 0")
