"""`/metrics` of a router with workers: whichever worker a scrape reaches answers for all of them, each series
labelled `worker`. Every worker also serves its own registry, as JSON, on a private Unix socket; the worker
that answers a scrape asks its siblings there and merges (docs/router.md#workers).

Why not prometheus_client's multiprocess mode: breakers, health and statistics are per worker, so summing or
maxing their gauges across workers would show a state no worker is in; the router removes series (engine
figures that went away, the table version of a source no longer in force), which multiprocess files cannot;
and it would add a locked mmap write to every metric update on the request path. Here the request path is
untouched, and the cost is a few local round trips per scrape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from data_plane.metrics import RouterMetrics
from data_plane.worker import WorkerIdentity

log = logging.getLogger(__name__)

SIBLING_TIMEOUT_S = 1.0
WORKER_LABEL = "worker"
UP_FAMILY = "meridian_worker_scrape_up"

FamilyJson = dict[str, Any]


def families_json(registry: CollectorRegistry) -> list[FamilyJson]:
    """A registry's families as plain values (what a sibling sends)."""
    return [
        {"name": family.name, "documentation": family.documentation, "type": family.type, "unit": family.unit,
         "samples": [[s.name, s.labels, s.value, s.timestamp] for s in family.samples]}
        for family in registry.collect()
    ]


def merge_families(by_worker: Mapping[int, Sequence[FamilyJson] | None]) -> list[Metric]:
    """Every worker's families as one exposition: a family once, with each worker's samples labelled by its
    index; `meridian_worker_scrape_up{worker}` says whose metrics are in (0: that worker did not answer, e.g.
    while it restarts). Families keep the order in which they first appear."""
    merged: dict[str, Metric] = {}
    for index in sorted(by_worker):
        for family in by_worker[index] or ():
            metric = merged.get(family["name"])
            if metric is None:
                metric = merged[family["name"]] = Metric(family["name"], family["documentation"], family["type"],
                                                         family["unit"])
            worker = str(index)
            metric.samples.extend(Sample(name, {**labels, WORKER_LABEL: worker}, value, timestamp)
                                  for name, labels, value, timestamp in family["samples"])
    up = Metric(UP_FAMILY, "1 when the worker's metrics are in this scrape, 0 when it did not answer its "
                "sibling (restarting or stuck).", "gauge")
    up.samples.extend(Sample(UP_FAMILY, {WORKER_LABEL: str(index)}, 0.0 if families is None else 1.0, None)
                      for index, families in sorted(by_worker.items()))
    return [*merged.values(), up]


class MergedFamilies:
    """What `generate_latest` collects from: the merged families of one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


async def _sibling_families(identity: WorkerIdentity, index: int) -> list[FamilyJson] | None:
    connector = aiohttp.UnixConnector(path=str(identity.metrics_socket(index)))
    try:
        async with aiohttp.ClientSession(connector=connector) as session, session.get(
                "http://worker/metrics.json", timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)) as response:
            response.raise_for_status()
            families: list[FamilyJson] = json.loads(await response.read())
            return families
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


async def all_workers(identity: WorkerIdentity, own: CollectorRegistry) -> MergedFamilies:
    """This worker's registry and its siblings', asked at once, merged."""
    siblings = identity.siblings()
    answers = await asyncio.gather(*(_sibling_families(identity, index) for index in siblings))
    by_worker: dict[int, Sequence[FamilyJson] | None] = dict(zip(siblings, answers, strict=True))
    by_worker[identity.index] = families_json(own)
    return MergedFamilies(merge_families(by_worker))


async def sibling_listener(identity: WorkerIdentity, metrics: RouterMetrics,
                           refresh: Callable[[], None]) -> AsyncIterator[None]:
    """Serves this worker's own registry on its private socket while the router runs; `refresh()` updates the
    gauges computed at scrape time first."""

    async def own_metrics(request: web.Request) -> web.Response:
        refresh()
        return web.Response(body=json.dumps(families_json(metrics.registry)).encode(),
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics.json", own_metrics)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    path = identity.metrics_socket(identity.index)
    path.unlink(missing_ok=True)  # a previous life of this worker's
    await web.UnixSite(runner, str(path)).start()
    try:
        yield
    finally:
        await runner.cleanup()
        path.unlink(missing_ok=True)
