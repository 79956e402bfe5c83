"""Supervised background loops: a loop that raises is logged, waited for with a bounded exponential backoff,
restarted and counted; one that returns is done; cancelling stops it at once, running or waiting. The job
worker's loops run supervised, each on its own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from data_plane.config import JobsConfig
from data_plane.jobs.store import JobStore
from data_plane.jobs.worker import JobWorker
from data_plane.serving.pipeline import Serving
from meridian_common import supervision
from meridian_common.supervision import Backoff, supervise

TINY = Backoff(initial_s=0.001, max_s=0.004)


@pytest.mark.parametrize(
    ("backoff", "failures", "delay_s"),
    [
        (Backoff(0.5, 30.0), 1, 0.5),
        (Backoff(0.5, 30.0), 2, 1.0),
        (Backoff(0.5, 30.0), 4, 4.0),
        (Backoff(0.5, 30.0), 7, 30.0),  # 32 capped
        (Backoff(0.5, 30.0), 10_000, 30.0),
        (Backoff(2.0, 2.0), 3, 2.0),
        (Backoff(0.5, 30.0), 0, 0.5),
    ],
)
def test_the_backoff_doubles_per_failure_in_a_row_up_to_its_maximum(backoff: Backoff, failures: int,
                                                                   delay_s: float) -> None:
    assert backoff.delay_s(failures) == delay_s


@pytest.mark.parametrize(("initial_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_cannot_work_is_refused(initial_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(initial_s, max_s)


def _failing(times: int, runs: list[int]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        runs.append(len(runs))
        if len(runs) <= times:
            raise RuntimeError(f"failure {len(runs)}")

    return run


def test_a_loop_that_raises_is_logged_restarted_and_counted_until_it_returns(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded_sleep(delay_s: float) -> None:
        waits.append(delay_s)
        await real_sleep(0)

    monkeypatch.setattr(supervision.asyncio, "sleep", recorded_sleep)
    runs: list[int] = []
    restarts: list[str] = []
    with caplog.at_level(logging.INFO, logger="meridian_common.supervision"):
        asyncio.run(asyncio.wait_for(
            supervise("probe_loop", _failing(5, runs), on_restart=restarts.append, backoff=Backoff(0.5, 4.0)), 10))
    assert len(runs) == 6 and restarts == ["probe_loop"] * 5
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    failed = [r for r in caplog.records if "background_loop_failed" in r.getMessage()]
    assert len(failed) == 5 and all(r.exc_info is not None for r in failed)
    assert "loop=probe_loop failures_in_a_row=1 restart_in_s=0.5" in failed[0].getMessage()
    assert "RuntimeError: failure 1" in caplog.text


def test_cancelling_stops_a_running_loop_at_once_and_restarts_nothing() -> None:
    restarts: list[str] = []
    stopped: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.append(True)

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(supervise("forever", forever, on_restart=restarts.append, backoff=TINY))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return task

    task = asyncio.run(scenario())
    assert task.cancelled() and stopped == [True] and restarts == []


def test_cancelling_during_the_backoff_stops_before_the_restart() -> None:
    runs: list[int] = []
    restarts: list[str] = []

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(supervise("failing", _failing(100, runs), on_restart=restarts.append,
                                             backoff=Backoff(60.0, 60.0)))
        for _ in range(100):  # until the first failure has happened and the backoff begun
            await asyncio.sleep(0)
            if runs:
                break
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return task

    task = asyncio.run(scenario())
    assert task.cancelled() and runs == [0] and restarts == []


class _FailingOnceStore:
    """Just what the claim and sweep loops call; the first claim fails with an unexpected error (a bug)."""

    region = "test"

    def __init__(self) -> None:
        self.claims = 0

    async def claim_next(self, router_id: str, lease_ms: int) -> None:
        self.claims += 1
        if self.claims == 1:
            raise KeyError("a field the worker did not expect")

    async def expired_leases(self, now_ms: int, limit: int) -> list[str]:
        return []

    async def queue_length(self) -> int:
        return 0


def test_the_job_workers_loops_are_supervised_each_on_its_own() -> None:
    store = _FailingOnceStore()
    restarts: list[str] = []
    worker = JobWorker(cast(Serving, None), "router-1", cast(JobStore, cast(Any, store)),
                       JobsConfig(poll_interval_s=0.01, lease_s=0.02), deliverer=None)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run(restarts.append))
        for _ in range(400):  # at most about 4 s: the claim loop fails once and waits its 0.5 s backoff
            await asyncio.sleep(0.01)
            if store.claims >= 3:
                break
        task.cancel()
        await asyncio.wait({task}, timeout=5)

    asyncio.run(scenario())
    assert restarts == ["jobs_claim"] and store.claims >= 3
