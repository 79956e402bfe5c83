"""`meridian bench etcd-growth`: many policy pushes against a real etcd, and what they leave in its database.

Two cases side by side, each on its own etcd: as the project runs it (auto-compaction, the last N policy
versions kept) and, for comparison, with neither (every revision and every version kept, as before).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
from aetcd import rpc

from control_plane.etcd_keys import EtcdKeys
from control_plane.policy.store import PolicyStore
from meridian_proto import policy_pb2, routing_pb2
from regions.local_services import start_etcd

SAMPLE_EVERY = 100  # pushes between two readings of the db size
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class DbSize:
    """etcd's Status: the file's size, the part of it holding live data, and the store's revision."""

    total_bytes: int
    in_use_bytes: int
    revision: int


async def db_size(client: aetcd.Client) -> DbSize:
    # aetcd's status() drops dbSizeInUse and the header: the Maintenance stub answers with both.
    status = await client.maintenancestub.Status(rpc.StatusRequest(), timeout=REQUEST_TIMEOUT_S)
    return DbSize(int(status.dbSize), int(status.dbSizeInUse), int(status.header.revision))


def policy_document(push: int) -> policy_pb2.PolicyDocument:
    """A document of the size an operator's is: three regions, two models, a comment; one budget moves."""
    models = [
        policy_pb2.ModelPolicy(region=region, model=model, policy="cost-first", latency_budget_ms=1000 + push,
                               allowed_policies=["cost-first", "latency-first", "scored"], priority="balanced",
                               max_error_rate=0.3, max_ttft_p95_ms=800, max_tpot_p95_ms=40,
                               client_limits=routing_pb2.RateLimits(rpm=600, tpm=200_000))
        for region in ("us-east", "eu-west", "ap-south") for model in ("llama-3.3-70b", "llama-3.1-8b")
    ]
    return policy_pb2.PolicyDocument(models=models, comment=f"bench push {push}: latency budgets moved by 1 ms")


@dataclass(frozen=True, slots=True)
class GrowthCase:
    name: str
    compaction_retention_s: float  # 0 = etcd keeps every revision
    versions_kept: int


async def _push_all(endpoint: tuple[str, int], case: GrowthCase, pushes: int, settle_s: float,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    host, port = endpoint
    async with aetcd.Client(host=host, port=port, timeout=REQUEST_TIMEOUT_S) as client:
        keys = EtcdKeys("/meridian")
        store = PolicyStore(client, keys, versions_kept=case.versions_kept)
        before = await db_size(client)
        peak_total, peak_in_use = before.total_bytes, before.in_use_bytes
        current = await store.current()
        tenth = max(1, pushes // 10)
        milestones: list[int] = []  # the db size after each tenth of the pushes
        started = time.perf_counter()
        for push in range(1, pushes + 1):
            current = await store.write(policy_document(push), previous=current, author="bench", now_unix_ms=push)
            if push % SAMPLE_EVERY and push % tenth and push != pushes:
                continue
            reading = await db_size(client)
            peak_total = max(peak_total, reading.total_bytes)
            peak_in_use = max(peak_in_use, reading.in_use_bytes)
            if push % tenth == 0:
                milestones.append(reading.total_bytes)
                progress(f"  {case.name}: {push}/{pushes} pushes, db {reading.total_bytes / 2**20:.1f} MiB")
        pushing_s = time.perf_counter() - started
        # Compaction runs on etcd's own timer: give it one more period before the last reading.
        await asyncio.sleep(settle_s)
        after = await db_size(client)
        return {
            "case": case.name, "pushes": pushes, "versions_kept": case.versions_kept,
            "compaction_retention_s": case.compaction_retention_s,
            # Keys only: uncompacted, the documents themselves pass gRPC's 4 MiB reply limit (`history` fails).
            "versions_in_etcd": len(await client.get_prefix(keys.policy_history, keys_only=True)) + 1,
            "revisions": after.revision - before.revision,
            "db_before_bytes": before.total_bytes, "db_peak_bytes": max(peak_total, after.total_bytes),
            "db_after_bytes": after.total_bytes,
            "in_use_before_bytes": before.in_use_bytes, "in_use_peak_bytes": max(peak_in_use, after.in_use_bytes),
            "in_use_after_bytes": after.in_use_bytes,
            "db_bytes_each_tenth": milestones,
            "pushes_per_s": round(pushes / pushing_s, 1),
        }


def run_case(case: GrowthCase, pushes: int, progress: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meridian-bench-") as tmp:
        etcd = start_etcd(Path(tmp) / "etcd", Path(tmp) / "etcd.log",
                          compaction_retention_s=case.compaction_retention_s)
        try:
            settle_s = 2 * case.compaction_retention_s + 1 if case.compaction_retention_s else 0.0
            return asyncio.run(_push_all((etcd.host, etcd.port), case, pushes, settle_s, progress))
        finally:
            etcd.stop()


def run_etcd_growth(pushes: int, versions_kept: int, compaction_retention_s: float,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    cases = [
        GrowthCase("bounded", compaction_retention_s, versions_kept),
        GrowthCase("unbounded", 0.0, pushes + 1),
    ]
    results = []
    for case in cases:
        progress(f"{case.name}: {pushes} policy pushes against a fresh etcd ...")
        results.append(run_case(case, pushes, progress))
    return {"document_bytes": policy_document(0).ByteSize(), "cases": results}


def etcd_growth_table(figures: dict[str, Any]) -> str:
    def mib(value: int) -> str:
        return f"{value / 2**20:.1f}"

    lines = [f"policy pushes against a real etcd (document of {figures['document_bytes']} bytes)",
             f"  {'case':<10} {'pushes':>6} {'kept':>6} {'compaction':>10} {'revisions':>9} "
             f"{'db MiB before/peak/after':>25} {'in use MiB before/peak/after':>29} {'push/s':>7}"]
    for case in figures["cases"]:
        compaction = f"{case['compaction_retention_s']:g} s" if case["compaction_retention_s"] else "off"
        lines.append(
            f"  {case['case']:<10} {case['pushes']:>6} {case['versions_in_etcd']:>6} {compaction:>10} "
            f"{case['revisions']:>9} "
            f"{mib(case['db_before_bytes']):>9} / {mib(case['db_peak_bytes'])} / {mib(case['db_after_bytes']):<5} "
            f"{mib(case['in_use_before_bytes']):>12} / {mib(case['in_use_peak_bytes'])} / "
            f"{mib(case['in_use_after_bytes']):<5} {case['pushes_per_s']:>7}")
    for case in figures["cases"]:
        tenths = " ".join(mib(size) for size in case["db_bytes_each_tenth"])
        lines.append(f"  {case['case']:<10} db MiB after each tenth of the pushes: {tenths}")
    return "\n".join(lines)
