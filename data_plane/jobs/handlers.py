"""The asynchronous job endpoints: submit (`POST /v1/async/chat/completions`, 202 once Redis holds the job),
poll (`GET /v1/async/{id}`), cancel (`DELETE /v1/async/{id}`) and the operators' list (`GET /v1/async`); and
the cleanup context that starts the worker, or says why jobs do not run here."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from data_plane.app_keys import BODY_INTAKE, CONFIG, CREDENTIALS, METRICS, ROUTER_ID, SERVING, STATE
from data_plane.auth import Credentials
from data_plane.callback_rules import callback_refusal
from data_plane.config import JobsConfig
from data_plane.errors import ClientError
from data_plane.jobs.callbacks import CallbackDeliverer, CallbackSettings, callback_session
from data_plane.jobs.state import Cancel, IllegalTransition, JobStatus, apply, new_job
from data_plane.jobs.store import JOB_ID, JobRequest, JobStore, JobsUnavailable, QueueFull, StoredJob, now_ms
from data_plane.jobs.worker import JobWorker
from data_plane.serving.pipeline import QUEUE_PRIORITY_HEADER, charge_client, queue_priority
from data_plane.serving.request_parsing import BUDGET_HEADER, POLICY_HEADER, PRIORITY_HEADER
from data_plane.serving.request_shapes import InvalidRequest, ParsedRequest, optional_text
from data_plane.serving.route_planning import model_chain
from meridian_common.logging_setup import event
from meridian_common.redis_url import parse_redis_url

log = logging.getLogger(__name__)

# Request headers a job keeps, to be routed as the synchronous request would have been. Authorization is
# not kept: only the client's identity (a digest of its key, or its address) is stored.
ROUTING_HEADERS = (POLICY_HEADER, BUDGET_HEADER, PRIORITY_HEADER, QUEUE_PRIORITY_HEADER, "x-meridian-cache",
                   "x-meridian-deterministic")
_NOT_STORED = ("callback_url", "stream", "stream_options")
_CANCEL_TRIES = 5
_MAX_LIST = 1000


@dataclass(frozen=True, slots=True)
class JobsRunning:
    """Jobs run on this router: their store, the worker, and the settings the endpoints apply."""

    store: JobStore
    worker: JobWorker
    settings: JobsConfig
    callback_signing: bool

    def status(self) -> dict[str, Any]:
        worker = self.worker
        return {"enabled": True, "concurrency": self.settings.concurrency, "running_here": worker.running,
                "queue_length": worker.queue_length, "store": "unreachable" if worker.store_error else "reachable",
                "store_error": worker.store_error, "callbacks": self.callback_signing}


@dataclass(frozen=True, slots=True)
class JobsOff:
    """Jobs do not run on this router: why, and the HTTP status their endpoints answer with."""

    reason: str
    http_status: int

    def status(self) -> dict[str, Any]:
        return {"enabled": False, "reason": self.reason}


JOBS = web.AppKey[JobsRunning | JobsOff]("jobs")


def _unavailable(error: JobsUnavailable) -> ClientError:
    return ClientError(503, f"asynchronous jobs are unavailable: {error}; nothing was changed, retry later",
                       code="jobs_unavailable", headers={"Retry-After": "1"})


def _jobs(request: web.Request) -> JobsRunning:
    jobs = request.app[JOBS]
    if isinstance(jobs, JobsOff):
        raise ClientError(jobs.http_status, jobs.reason,
                          code="jobs_disabled" if jobs.http_status == 404 else "jobs_unavailable")
    return jobs


def _caller(credentials: Credentials, request: web.Request) -> str | None:
    """None for the admin (sees every job), else the client's identity (sees only its own jobs)."""
    if credentials.is_admin(request):
        return None
    return credentials.authenticate(request)


def _callback_url(parsed: ParsedRequest) -> str | None:
    try:
        return optional_text(parsed.body.fields, "callback_url")
    except InvalidRequest as error:
        raise ClientError(400, error.message, param=error.param, code=error.code) from error


def _not_found(region: str, job_id: str) -> ClientError:
    return ClientError(404, f"no job {job_id!r} in region {region} (never submitted, not yours, "
                       "or expired after jobs.result_ttl_s)", param="id", code="job_not_found")


async def _visible_job(request: web.Request) -> tuple[JobsRunning, StoredJob]:
    jobs = _jobs(request)
    region = request.app[CONFIG].region
    job_id = request.match_info["job_id"]
    caller = _caller(request.app[CREDENTIALS], request)
    if not JOB_ID.match(job_id):
        raise _not_found(region, job_id)
    try:
        job = await jobs.store.load(job_id)
    except JobsUnavailable as error:
        raise _unavailable(error) from error
    if job is None or (caller is not None and job.request.identity != caller):
        raise _not_found(region, job_id)
    return jobs, job


async def submit(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    identity = request.app[CREDENTIALS].authenticate(request)
    # Every job body is kept in Redis until result_ttl_s: jobs have a limit of their own.
    async with request.app[BODY_INTAKE].receive(request, "chat/completions",
                                                max_body_bytes=jobs.settings.max_body_bytes) as parsed:
        return await _submit(request, jobs, identity, parsed)


async def _submit(request: web.Request, jobs: JobsRunning, identity: str, parsed: ParsedRequest) -> web.Response:
    settings = jobs.settings
    callback_url = _callback_url(parsed)
    headers = {name: value for name in ROUTING_HEADERS if (value := request.headers.get(name)) is not None}
    # What would be refused later is refused now: unknown model, bad policy or priority headers, and a client
    # over its limits (charged now, so that a flood of submissions is refused as a flood of requests would be).
    chain = model_chain(request.app[STATE], parsed, CIMultiDictProxy(CIMultiDict(headers)))
    queue_priority(headers)
    charge_client(request.app[SERVING], identity, chain[0][0], parsed.estimated_prompt_tokens, {})
    if callback_url is not None:
        refusal = callback_refusal(callback_url, settings.callback_host_patterns, has_secret=jobs.callback_signing,
                                   private_addresses=settings.callback_private_addresses)
        if refusal is not None:
            raise ClientError(400, refusal, param="callback_url", code="callback_not_allowed")
    job_id = f"job_{uuid.uuid4().hex}"
    state = new_job(job_id, now_ms=now_ms(), max_attempts=settings.max_attempts,
                    callback_max_attempts=settings.callback_max_attempts if callback_url else 0)
    # A job's answer is kept whole, so it is never streamed.
    job = JobRequest("chat/completions", parsed.body.without(_NOT_STORED), headers, identity, callback_url)
    try:
        await jobs.store.submit(state, job)
    except JobsUnavailable as error:
        log.warning(event("job_submit_refused", model=parsed.model, reason=str(error)))
        raise ClientError(503, f"asynchronous jobs are unavailable: {error}; the job was NOT accepted, retry later",
                          code="jobs_unavailable", headers={"Retry-After": "1"}) from error
    except QueueFull as error:
        raise ClientError(429, f"{error}; retry later", code="job_queue_full", headers={"Retry-After": "5"}) from error
    jobs.worker.wake()
    log.info(event("job_submitted", job=job_id, model=parsed.model, callback=callback_url is not None))
    poll_url = f"/v1/async/{job_id}"
    return web.json_response({"id": job_id, "object": "async.job", "status": "queued", "poll_url": poll_url},
                             status=202, headers={"Location": poll_url})


async def poll(request: web.Request) -> web.Response:
    _, job = await _visible_job(request)
    return web.Response(body=job.document(), content_type="application/json")


async def cancel(request: web.Request) -> web.Response:
    jobs, job = await _visible_job(request)
    for _ in range(_CANCEL_TRIES):
        try:
            cancelled = apply(job.state, Cancel(), now_ms())
        except IllegalTransition as error:
            raise ClientError(409, f"job {job.state.id} is already {job.state.status}: nothing to cancel",
                              code="job_not_cancellable") from error
        try:
            if await jobs.store.commit(job.state, cancelled):
                log.info(event("job_cancelled", job=job.state.id, was=job.state.status, owner=job.state.owner))
                jobs.worker.wake_callbacks()
                return web.Response(body=StoredJob(cancelled, job.request, job.result).document(),
                                    content_type="application/json")
            reloaded = await jobs.store.load(job.state.id)
        except JobsUnavailable as error:
            raise _unavailable(error) from error
        if reloaded is None:
            raise _not_found(request.app[CONFIG].region, job.state.id)
        job = reloaded
    raise ClientError(409, f"job {job.state.id} kept changing while being cancelled; retry",
                      code="job_busy", headers={"Retry-After": "1"})


async def list_jobs(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    request.app[CREDENTIALS].check_admin(request)
    status_text = request.query.get("status")
    try:
        status = JobStatus(status_text) if status_text else None
    except ValueError as error:
        raise ClientError(400, f"unknown status {status_text!r}; expected one of "
                          f"{', '.join(s.value for s in JobStatus)}", param="status", code="invalid_status") from error
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= _MAX_LIST:
        raise ClientError(400, f"limit must be an integer from 1 to {_MAX_LIST}", param="limit", code="invalid_limit")
    try:
        states = await jobs.store.recent(limit, status)
    except JobsUnavailable as error:
        raise _unavailable(error) from error
    data: list[dict[str, Any]] = [
        {"id": s.id, "status": str(s.status), "attempts": s.attempts, "owner": s.owner,
         "created_at": s.created_ms // 1000, "updated_at": s.updated_ms // 1000,
         "callback": None if s.callback_max_attempts == 0 else str(s.callback_status)}
        for s in states
    ]
    return web.json_response({"object": "list", "region": request.app[CONFIG].region, "data": data})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/async/chat/completions", submit)
    app.router.add_get("/v1/async", list_jobs)
    app.router.add_get("/v1/async/{job_id}", poll)
    app.router.add_delete("/v1/async/{job_id}", cancel)


async def jobs_context(app: web.Application) -> AsyncIterator[None]:
    """Starts the worker when jobs are enabled and Redis keeps them, and sets `JOBS` either way."""
    config = app[CONFIG]
    settings = config.jobs
    if not settings.enabled:
        app[JOBS] = JobsOff("asynchronous jobs are disabled on this router", 404)
        yield
        return
    if config.redis_url is None:
        app[JOBS] = JobsOff("asynchronous jobs need Redis to be kept: this router has no redis_url", 503)
        yield
        return
    # Behind Sentinel, a failover promotes a replica: a job is accepted only once a replica holds it too.
    replicated = parse_redis_url(config.redis_url) is not None
    store = JobStore(config.redis_url, config.region, result_ttl_s=settings.result_ttl_s,
                     max_queued=settings.max_queued, max_queued_per_client=settings.max_queued_per_client,
                     replicated=replicated)
    secret = os.environ.get(settings.callback_secret_env) if settings.callback_secret_env else None
    callbacks: aiohttp.ClientSession | None = None
    deliverer: CallbackDeliverer | None = None
    if secret:
        callbacks = callback_session(settings.callback_private_addresses)
        deliverer = CallbackDeliverer(store, callbacks, CallbackSettings(
            secret.encode(), settings.callback_max_attempts, int(settings.callback_backoff_s * 1000),
            settings.callback_timeout_s, settings.callback_private_addresses))
    worker = JobWorker(app[SERVING], app[ROUTER_ID], store, settings, deliverer)
    app[JOBS] = JobsRunning(store, worker, settings, callback_signing=deliverer is not None)
    task = asyncio.create_task(worker.run(app[METRICS].restarts(config.region)))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.stop()
    await store.close()
    if callbacks is not None:
        await callbacks.close()
