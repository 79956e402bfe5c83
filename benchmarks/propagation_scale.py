"""`meridian bench propagation --subscribers N[,N...]`: one real control-plane replica (with a real etcd and
Redis) serving N light table subscribers (`benchmarks/table_subscribers.py`, in processes of their own so that
the replica's process is measured alone), spread over the stack's regions. Per N, on a fresh stack: the
replica's RSS before and after the subscribers connect, then M policy pushes through the admin API, each timed
from the push to the last subscriber's ACK of the table that carries it."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmarks.control_plane_benches import push_policy
from benchmarks.control_plane_stack import MODEL, REGIONS, ControlPlaneStack, wait_for
from benchmarks.load import percentile
from benchmarks.proc_stats import process_cpu_s, rss_bytes
from benchmarks.table_subscribers import raise_fd_limit

TARGET_P99_MS = 500.0
READY_TIMEOUT_S = 120.0
PUSH_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # after the last subscriber is up, before reading RSS: let the replica's allocations settle


class SubscriberProcesses:
    """The subscriber processes and one queue of the lines they print, tagged with the process's index."""

    def __init__(self, target: str, subscribers: int, processes: int, workdir: Path) -> None:
        self.lines: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.children: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []
        share, extra = divmod(subscribers, processes)
        first = 0
        for index in range(processes):
            count = share + (1 if index < extra else 0)
            log_path = workdir / f"subscribers-{index}.log"
            self.logs.append(log_path)
            with open(log_path, "w") as log_file:
                child = subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.table_subscribers", "--target", target,
                     "--regions", ",".join(REGIONS), "--count", str(count), "--first-index", str(first),
                     "--model", MODEL],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True,
                    start_new_session=True)
            self.children.append(child)
            assert child.stdout is not None
            threading.Thread(target=self._read, args=(index, child.stdout), daemon=True).start()
            first += count

    def _read(self, index: int, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put((index, json.loads(line)))

    def wait_all(self, what: str, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> list[dict[str, Any]]:
        """The line that `match`es from every process, or TimeoutError naming `what` and the logs."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(got) < len(self.children):
            for index, child in enumerate(self.children):
                if child.poll() is not None and index not in got:
                    raise RuntimeError(f"subscriber process {index} exited with {child.returncode}; "
                                       f"log {self.logs[index]}")
            try:
                index, line = self.lines.get(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"not within {timeout_s} s: {what} from every subscriber process "
                                       f"(got {sorted(got)}); logs {[str(p) for p in self.logs]}") from None
                continue
            if match(line):
                got[index] = line
        return list(got.values())

    def stop(self) -> None:
        for child in self.children:
            if child.stdin is not None:
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def run_one(subscribers: int, pushes: int, processes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        stack = ControlPlaneStack(Path(tmp))
        fleet: SubscriberProcesses | None = None
        try:
            progress(f"[{subscribers} subscribers] starting etcd, Redis and one control-plane replica ...")
            stack.start_infrastructure()
            replica = stack.start_replica("cp-a")
            wait_for(stack.leader, "a leader")
            target = stack.health(replica)["grpc"]
            time.sleep(SETTLE_S)
            rss_before = rss_bytes(replica.pid)
            processes = max(1, min(processes, subscribers))
            progress(f"[{subscribers} subscribers] connecting them from {processes} process(es) to {target} ...")
            started = time.monotonic()
            fleet = SubscriberProcesses(target, subscribers, processes, Path(tmp))
            fleet.wait_all("every subscriber's first ACK", lambda line: "ready" in line, READY_TIMEOUT_S)
            connect_s = time.monotonic() - started
            time.sleep(SETTLE_S)
            rss_after = rss_bytes(replica.pid)
            progress(f"[{subscribers} subscribers] all ACKed a first table in {connect_s:.1f} s; replica RSS "
                     f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
            delays_ms: list[float] = []
            acks: list[int] = []
            nacks = 0
            cpu_before_s = process_cpu_s(replica.pid)
            for push in range(pushes):
                budget = 1000 + push
                pushed_at = time.monotonic()
                push_policy(stack, budget)
                lines = fleet.wait_all(f"push {push}'s ACKs", lambda line, b=budget: line.get("budget") == b,
                                       PUSH_TIMEOUT_S)
                delays_ms.append((max(line["last_ack_monotonic"] for line in lines) - pushed_at) * 1000)
                acks.append(sum(line["acks"] for line in lines))
                nacks = sum(line["nacks"] for line in lines)
                progress(f"  push {push + 1}/{pushes}: {delays_ms[-1]:.1f} ms, {acks[-1]} ACKs")
            # Less noisy than the delays on a shared machine: what the replica itself spent per push (the leader's
            # work on the push, the fan-out, the ACKs, and its background loops meanwhile).
            cpu_per_push_ms = (process_cpu_s(replica.pid) - cpu_before_s) * 1000 / pushes
            rss_end = rss_bytes(replica.pid)
            return {
                "subscribers": subscribers, "subscriber_processes": processes, "pushes": pushes,
                "push_to_all_ack_p50_ms": round(percentile(delays_ms, 50), 2),
                "push_to_all_ack_p99_ms": round(percentile(delays_ms, 99), 2),
                "push_to_all_ack_max_ms": round(max(delays_ms), 2),
                "acks_per_push_min": min(acks), "every_subscriber_acked_every_push": min(acks) == subscribers,
                "nacks": nacks, "connect_all_s": round(connect_s, 2),
                "replica_cpu_ms_per_push": round(cpu_per_push_ms, 1),
                "replica_rss_before_bytes": rss_before, "replica_rss_after_bytes": rss_after,
                "replica_rss_after_pushes_bytes": rss_end,
                "replica_rss_bytes_per_subscriber": round((rss_after - rss_before) / subscribers),
            }
        finally:
            if fleet is not None:
                fleet.stop()
            stack.stop()


def run_propagation_scale(subscriber_counts: list[int], pushes: int, processes: int,
                          progress: Callable[[str], None]) -> dict[str, Any]:
    progress(raise_fd_limit(2 * max(subscriber_counts) + 1024))
    runs = [run_one(n, pushes, processes, progress) for n in subscriber_counts]
    return {"runs": runs, "target_p99_ms": TARGET_P99_MS, "regions": list(REGIONS)}


def propagation_scale_table(figures: dict[str, Any]) -> str:
    rows = ["policy push -> every subscriber ACKed it, one replica, subscribers spread over "
            f"{', '.join(figures['regions'])}",
            "| subscribers | pushes | p50 ms | p99 ms | max ms | all ACKed | NACKs | replica RSS before -> after MiB "
            "| bytes / subscriber | replica CPU ms / push |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in figures["runs"]:
        rows.append(
            f"| {run['subscribers']} | {run['pushes']} | {run['push_to_all_ack_p50_ms']} | "
            f"{run['push_to_all_ack_p99_ms']} | {run['push_to_all_ack_max_ms']} | "
            f"{'yes' if run['every_subscriber_acked_every_push'] else 'NO'} | {run['nacks']} | "
            f"{run['replica_rss_before_bytes'] / 2**20:.1f} -> {run['replica_rss_after_bytes'] / 2**20:.1f} | "
            f"{run['replica_rss_bytes_per_subscriber']} | {run['replica_cpu_ms_per_push']} |")
    runs = figures["runs"]
    for before, after in zip(runs, runs[1:], strict=False):
        # How both figures grow from one N to the next.
        grown = after["subscribers"] / before["subscribers"]
        p99 = after["push_to_all_ack_p99_ms"] / max(0.01, before["push_to_all_ack_p99_ms"])
        rss = _rss_growth(after) / max(1, _rss_growth(before))
        rows.append(f"{before['subscribers']} -> {after['subscribers']} subscribers (x{grown:g}): p99 x{p99:.1f}, "
                    f"replica RSS growth x{rss:.1f}")
    for run in runs:
        ok = run["push_to_all_ack_p99_ms"] < figures["target_p99_ms"] and run["every_subscriber_acked_every_push"]
        rows.append(f"{'PASS' if ok else 'MISS'}  {run['subscribers']} subscribers: p99 "
                    f"{run['push_to_all_ack_p99_ms']} ms (target < {figures['target_p99_ms']:g}), all ACKed")
    return "\n".join(rows)


def _rss_growth(run: dict[str, Any]) -> int:
    return int(run["replica_rss_after_bytes"] - run["replica_rss_before_bytes"])
