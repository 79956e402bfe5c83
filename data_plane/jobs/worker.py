"""Runs the region's asynchronous jobs on this router: claims queued jobs up to `jobs.concurrency`, runs
each through the same path as a synchronous request (`serving.serve_parsed`), renews its lease
while it runs, and records the answer. A sweeper takes over jobs whose owner stopped renewing (it died),
and a third loop delivers due callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from data_plane.config import JobsConfig
from data_plane.errors import ClientError, error_body
from data_plane.jobs.callbacks import CallbackDeliverer
from data_plane.jobs.state import (
    Expire,
    Fail,
    IllegalTransition,
    JobState,
    JobStatus,
    Renew,
    Retry,
    Succeed,
    apply,
    backoff_ms,
    lease_expired,
    retryable,
)
from data_plane.jobs.store import JobRequest, JobResult, JobStore, JobsUnavailable, StoredJob, now_ms
from data_plane.serving.pipeline import Serving, serve_parsed
from data_plane.serving.request_parsing import parse_openai_request
from meridian_common.logging_setup import event
from meridian_common.supervision import RestartHook, supervise

log = logging.getLogger(__name__)

_SWEEP_LIMIT = 32      # expired leases taken over per sweep
_CALLBACK_LIMIT = 8    # callbacks posted at once per router
_FINISH_TRIES = 6      # writes of a finished job's answer while Redis is failing (about 6 s in all)


async def execute(serving: Serving, request: JobRequest) -> JobResult:
    """The job's answer, exactly as `POST /v1/{endpoint}` would have sent it (an error in OpenAI's shape)."""
    try:
        parsed = parse_openai_request(request.endpoint, request.body)
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        response = await serve_parsed(serving, parsed, headers, identity=request.identity, request=None,
                                      client_charged=True)
    except ClientError as error:
        return JobResult(error.status, error_body(error.status, error.message, code=error.code, param=error.param),
                         _meridian_headers(error.headers))
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return JobResult(500, error_body(500, "the router produced no whole answer for this job",
                                         code="internal_error"), {})
    return JobResult(response.status, response.body, _meridian_headers(response.headers))


def _meridian_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-meridian-")}


def _reason(result: JobResult) -> tuple[str, str | None]:
    try:
        error = orjson.loads(result.body).get("error") or {}
        return str(error.get("message") or f"HTTP {result.status_code}"), error.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return f"HTTP {result.status_code}", None


class JobWorker:
    def __init__(self, serving: Serving, router_id: str, store: JobStore, settings: JobsConfig,
                 deliverer: CallbackDeliverer | None) -> None:
        self._serving = serving
        self._store = store
        self._settings = settings
        self._deliverer = deliverer
        self._me = router_id
        self._lease_ms = int(settings.lease_s * 1000)
        self._renew_s = settings.lease_s / 5
        self._sweep_s = min(1.0, settings.lease_s / 2)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._callbacks_wake = asyncio.Event()
        self.queue_length: int | None = None
        self.store_error: str | None = None

    @property
    def running(self) -> int:
        """How many jobs run here; their ids are not shown, they are their clients' to see."""
        return len(self._tasks)

    def wake(self) -> None:
        """A job was queued here: look at the queue now rather than at the next poll."""
        self._wake.set()

    def wake_callbacks(self) -> None:
        self._callbacks_wake.set()

    async def run(self, on_restart: RestartHook | None = None) -> None:
        """Runs the claim, sweep and callback loops until cancelled, each supervised on its own: one that fails
        unexpectedly is logged and restarted (`on_restart` counts it) while the others go on."""
        loops = {"jobs_claim": self._claim_loop, "jobs_sweep": self._sweep_loop}
        if self._deliverer is not None:
            loops["jobs_callbacks"] = self._callback_loop
        await asyncio.gather(*(supervise(name, loop, on_restart=on_restart) for name, loop in loops.items()))

    async def stop(self) -> None:
        """Abandons the jobs running here: their leases lapse and another router takes them over."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _store_failed(self, error: JobsUnavailable) -> None:
        if self.store_error is None:
            log.warning(event("jobs_store_unreachable", region=self._store.region, reason=str(error)))
        self.store_error = str(error)

    def _store_ok(self) -> None:
        if self.store_error is not None:
            log.info(event("jobs_store_reachable", region=self._store.region))
        self.store_error = None

    async def _wait(self, signal: asyncio.Event, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), timeout_s)
        signal.clear()

    async def _claim_loop(self) -> None:
        while True:
            await self._wait(self._wake, self._settings.poll_interval_s)
            while len(self._tasks) < self._settings.concurrency:
                try:
                    job = await self._store.claim_next(self._me, self._lease_ms)
                except JobsUnavailable as error:
                    self._store_failed(error)
                    await asyncio.sleep(1.0)
                    break
                self._store_ok()
                if job is None:
                    break
                self._start(job)

    def _start(self, job: StoredJob) -> None:
        state = job.state
        log.info(event("job_claimed", job=state.id, attempt=state.attempts, router=self._me))
        task = asyncio.create_task(self._run(job))
        self._tasks[state.id] = task

        def finished(_: asyncio.Task[None]) -> None:
            self._tasks.pop(state.id, None)
            self._wake.set()

        task.add_done_callback(finished)

    async def _run(self, job: StoredJob) -> None:
        state: JobState | None = job.state
        execution = asyncio.create_task(execute(self._serving, job.request))
        try:
            while not execution.done():
                await asyncio.wait({execution}, timeout=self._renew_s)
                if execution.done():
                    break
                assert state is not None
                state = await self._renew(state)
                if state is None:
                    return
            try:
                result = execution.result()
            except Exception:
                log.exception(event("job_execution_error", job=job.state.id))
                result = JobResult(500, error_body(500, "the router failed on this job; see its log",
                                                   code="internal_error"), {})
            assert state is not None
            await self._finish(state, result)
        except Exception:
            log.exception(event("job_run_error", job=job.state.id))
        finally:
            if not execution.done():
                execution.cancel()
                await asyncio.gather(execution, return_exceptions=True)

    def _still_mine(self, current: StoredJob | None, state: JobState) -> JobState | None:
        if current is None:
            return None
        now = current.state
        mine = now.status is JobStatus.RUNNING and now.owner == self._me and now.attempts == state.attempts
        return now if mine else None

    async def _renew(self, state: JobState) -> JobState | None:
        """The renewed state; the same one when Redis failed (keep running: only a takeover stops a job);
        None when the job was cancelled or taken over, and this run must stop."""
        renewed = apply(state, Renew(self._me, self._lease_ms), now_ms())
        try:
            if await self._store.commit(state, renewed):
                return renewed
            current = self._still_mine(await self._store.load(state.id), state)
        except JobsUnavailable as error:
            self._store_failed(error)
            return state
        if current is None:
            log.info(event("job_abandoned", job=state.id, router=self._me,
                           reason="cancelled, taken over or expired"))
        return current

    def _outcome(self, state: JobState, result: JobResult, now: int) -> JobState:
        if result.status_code == 200:
            return apply(state, Succeed(self._me), now)
        reason, code = _reason(result)
        if retryable(result.status_code):
            delay = backoff_ms(state.attempts, int(self._settings.retry_backoff_s * 1000), 60_000)
            return apply(state, Retry(self._me, reason, now + delay, code), now)
        return apply(state, Fail(self._me, reason, code), now)

    async def _finish(self, state: JobState, result: JobResult) -> None:
        for attempt in range(_FINISH_TRIES):
            try:
                new = self._outcome(state, result, now_ms())
            except IllegalTransition as error:
                log.warning(event("job_result_dropped", job=state.id, reason=str(error)))
                return
            try:
                if await self._store.commit(state, new, result if new.terminal else None):
                    log.info(event("job_finished", job=state.id, status=new.status, http_status=result.status_code,
                                   attempt=state.attempts, router=self._me))
                    if new.terminal:
                        self._callbacks_wake.set()
                    else:
                        self._wake.set()
                    return
                current = self._still_mine(await self._store.load(state.id), state)
            except JobsUnavailable as error:
                self._store_failed(error)
                await asyncio.sleep(0.2 * 2 ** attempt)
                continue
            if current is None:
                log.info(event("job_result_dropped", job=state.id, reason="cancelled or taken over meanwhile"))
                return
            state = current
        log.warning(event("job_result_unrecorded", job=state.id, reason="job store unreachable; the job will "
                          "be taken over once its lease lapses"))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                await self.sweep_once()
                self.queue_length = await self._store.queue_length()
            except JobsUnavailable as error:
                self._store_failed(error)
                self.queue_length = None
            else:
                self._store_ok()

    async def sweep_once(self) -> int:
        """Takes over (requeues, or fails when its attempts are spent) every job whose lease expired, at
        most _SWEEP_LIMIT per sweep; returns how many."""
        taken = 0
        for job_id in await self._store.expired_leases(now_ms(), _SWEEP_LIMIT):
            if job_id in self._tasks:  # its owner is this very process, alive; Redis was slow to renew
                continue
            job = await self._store.load_or_forget(job_id)
            now = now_ms()
            if job is None or not lease_expired(job.state, now):
                continue
            taken_over = apply(job.state, Expire(), now)
            if await self._store.commit(job.state, taken_over):
                taken += 1
                log.warning(event("job_taken_over", job=job_id, previous_owner=job.state.owner, router=self._me,
                                  attempts=job.state.attempts, status=taken_over.status))
                self._wake.set()
                if taken_over.terminal:
                    self._callbacks_wake.set()
        return taken

    async def _callback_loop(self) -> None:
        assert self._deliverer is not None
        deliverer = self._deliverer
        while True:
            await self._wait(self._callbacks_wake, 0.25)
            try:
                due = await self._store.due_callbacks(now_ms(), _CALLBACK_LIMIT)
            except JobsUnavailable as error:
                self._store_failed(error)
                await asyncio.sleep(1.0)
                continue
            results = await asyncio.gather(*(deliverer.deliver(job_id) for job_id in due), return_exceptions=True)
            for outcome in results:
                if isinstance(outcome, JobsUnavailable):
                    self._store_failed(outcome)
                elif isinstance(outcome, Exception):
                    log.error(event("job_callback_error", error=type(outcome).__name__, detail=str(outcome)))
