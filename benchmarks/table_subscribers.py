"""Light table subscribers for `meridian bench propagation --subscribers N`: one process holding many of the
router's own `TableSubscriber`s (real gRPC stream, real `TableSyncSession`, the router's validator
`snapshot_from_proto`), each with a connection of its own, and nothing else of a router (no aiohttp app, no
routing). Run as `python -m benchmarks.table_subscribers`; the bench reads its stdout, one JSON object a line:

- `{"ready": n}` once every subscriber here has applied and ACKed a table of the control plane;
- `{"budget": b, "acks": n, "last_ack_monotonic": t, "nacks": k}` once every subscriber here has ACKed a
  table whose model has `latency_budget_ms == b` (t: `time.monotonic()` of the last one, which is
  CLOCK_MONOTONIC, the same clock in every process of the machine; k: NACKs so far, all subscribers).

It stops when its stdin closes (the bench exits or stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from collections.abc import Callable

from data_plane.table.snapshot import KeyEnvAllowlist, snapshot_from_proto
from data_plane.table.subscriber import Backoff, TableSubscriber
from meridian_proto import routing_pb2

# Each subscriber is one TCP connection, as each router process has: without this gRPC shares one
# connection (and its HTTP/2 stream limit) between every channel of the process to the same target.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
KEY_ENVS = KeyEnvAllowlist(("MERIDIAN_BACKEND_",), frozenset())


def raise_fd_limit(needed: int) -> str:
    """Raises the soft limit of open files towards the hard one when `needed` exceeds it; says what it did."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return f"open files: soft limit {soft} is enough for {needed}"
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return f"open files: soft limit raised from {soft} to {wanted} (hard {hard}) for {needed}"


class AckTally:
    """Which subscriber has ACKed a table of which budget; emits a line when all of them have one."""

    def __init__(self, count: int, model: str, emit: Callable[[dict[str, object]], None]) -> None:
        self._count = count
        self._model = model
        self._emit = emit
        self._seen: dict[float, set[int]] = {}
        self._last: dict[float, float] = {}
        self._ready: set[int] = set()
        self.subscribers: list[TableSubscriber] = []

    def applied(self, index: int, table: routing_pb2.RoutingTable) -> None:
        now = time.monotonic()
        if index not in self._ready:
            self._ready.add(index)
            if len(self._ready) == self._count:
                self._emit({"ready": self._count})
        budget = next((m.latency_budget_ms for m in table.models if m.model == self._model), None)
        if budget is None:
            return
        seen = self._seen.setdefault(budget, set())
        if index in seen:
            return  # a later table with the same policy (new telemetry): the push reached it already
        seen.add(index)
        self._last[budget] = now
        if len(seen) == self._count:
            nacks = sum(1 for s in self.subscribers if s.status().last_nack_version is not None)
            self._emit({"budget": budget, "acks": len(seen), "last_ack_monotonic": now, "nacks": nacks})


def _emit(line: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def run(target: str, regions: list[str], count: int, first: int, model: str) -> None:
    tally = AckTally(count, model, _emit)
    for index in range(first, first + count):
        region = regions[index % len(regions)]

        def validate(table: routing_pb2.RoutingTable, region: str = region) -> None:
            snapshot_from_proto(table, expected_region=region, key_envs=KEY_ENVS)

        def apply(table: routing_pb2.RoutingTable, index: int = index) -> None:
            # The subscriber writes the ACK right after this returns, in the same step.
            tally.applied(index, table)

        tally.subscribers.append(TableSubscriber(
            [target], router_id=f"bench-subscriber-{index}", region=region, url="",
            initial=routing_pb2.RoutingTable(region=region), validate=validate, apply=apply,
            backoff=Backoff(initial_s=0.2, max_s=2.0), connect_timeout_s=30.0, channel_options=OWN_CONNECTION))
    tasks = [asyncio.create_task(s.run()) for s in tally.subscribers]
    # The bench closes stdin to stop this process.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for subscriber in tally.subscribers:
        await subscriber.close()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the replica's distribution server")
    parser.add_argument("--regions", required=True, help="comma-separated; subscriber i gets region i mod len")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--model", required=True, help="the model whose latency_budget_ms marks a push")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # a line per ACK would cost more than the ACK
    print(raise_fd_limit(args.count + 256), file=sys.stderr)
    asyncio.run(run(args.target, args.regions.split(","), args.count, args.first_index, args.model))


if __name__ == "__main__":
    main()
