"""Callbacks of asynchronous jobs: which URLs a job may name, the HMAC signature, and the delivery of a
finished job's document to its callback_url, retried with backoff a bounded number of times.

Whether a callback is due, being delivered or done lives in the job's record (`job_state`), so the
router that delivers it need not be the one that ran the job, and a takeover never posts a delivered
callback again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from data_plane.jobs.state import (
    CallbackDelivered,
    CallbackFailed,
    CallbackStart,
    CallbackStatus,
    IllegalTransition,
    apply,
    backoff_ms,
    callback_due,
)
from data_plane.jobs.store import JobStore, StoredJob, now_ms
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-meridian-signature"
JOB_ID_HEADER = "x-meridian-job-id"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header)


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Exact host names, or `*.domain` for any subdomain of it (not the domain itself); case-insensitive."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def callback_refusal(url: str, patterns: Sequence[str], *, has_secret: bool) -> str | None:
    """Why a submit may not name this callback_url, or None when it may."""
    if not has_secret:
        return ("callbacks are disabled on this router: it has no signing secret "
                "(set jobs.callback_secret_env and that variable)")
    try:
        parsed = URL(url)
    except ValueError:
        return f"callback_url {url!r} is not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"callback_url must be an absolute http or https URL, got {url!r}"
    if not host_allowed(parsed.host, patterns):
        allowed = ", ".join(patterns) or "none"
        return f"callback host {parsed.host!r} is not allowed (jobs.callback_allowed_hosts: {allowed})"
    return None


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    secret: bytes
    max_attempts: int
    backoff_ms: int
    timeout_s: float


class CallbackDeliverer:
    def __init__(self, store: JobStore, session: aiohttp.ClientSession, settings: CallbackSettings) -> None:
        self._store = store
        self._session = session
        self._settings = settings

    async def deliver(self, job_id: str) -> None:
        """Posts the job's document if its callback is due and this router wins it; records the outcome."""
        job = await self._store.load_or_forget(job_id)
        now = now_ms()
        if job is None or not callback_due(job.state, now) or job.request.callback_url is None:
            return
        # The delivery lease: long enough for the post to finish, after which another router may take over.
        lease_ms = int(self._settings.timeout_s * 1000) * 2 + 1000
        try:
            started = apply(job.state, CallbackStart(lease_ms), now)
        except IllegalTransition:
            return
        if not await self._store.commit(job.state, started) or started.callback_status is not CallbackStatus.DELIVERING:
            return
        body = StoredJob(started, job.request, job.result).document()
        ok, detail = await self._post(job.request.callback_url, job_id, body)
        now = now_ms()
        outcome = apply(started, CallbackDelivered() if ok else CallbackFailed(
            now + backoff_ms(started.callback_attempts, self._settings.backoff_ms, 60_000)), now)
        committed = await self._store.commit(started, outcome)
        log.log(logging.INFO if ok else logging.WARNING, event(
            "job_callback", job=job_id, host=URL(job.request.callback_url).host, delivered=ok,
            attempt=started.callback_attempts, detail=detail, status=outcome.callback_status,
            recorded=committed))

    async def _post(self, url: str, job_id: str, body: bytes) -> tuple[bool, str]:
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._settings.secret, body),
                   JOB_ID_HEADER: job_id}
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as response:
                await response.read()
                return 200 <= response.status < 300, f"http_{response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return False, type(error).__name__
