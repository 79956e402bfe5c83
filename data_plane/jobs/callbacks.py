"""Delivery of a finished job's document to its callback_url, signed, to public addresses only unless allowed,
retried with backoff a bounded number of times; the rules it applies are in `data_plane/callback_rules.py`.

Whether a callback is due, being delivered or done lives in the job's record (`job_state`), so the
router that delivers it need not be the one that ran the job, and a takeover never posts a delivered
callback again.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from data_plane.callback_rules import is_ip_literal, public_address, sign
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


class PublicAddressResolver(AbstractResolver):
    """Resolves a callback's host and keeps only public addresses, so that the connection goes where the
    check said (a name that resolves to 127.0.0.1 or 169.254.169.254 cannot be used to reach the router's
    own network, even if it changes between the check and the connection)."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        public = [result for result in found if public_address(result["host"])]
        if not public:
            raise OSError(f"{host} resolves to no public address (jobs.callback_private_addresses is off)")
        return public

    async def close(self) -> None:
        await self._resolver.close()


def callback_session(private_addresses: bool) -> aiohttp.ClientSession:
    """The session callbacks are posted with: public addresses only, unless the operator allowed others."""
    resolver = None if private_addresses else PublicAddressResolver()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, limit=0))


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    secret: bytes
    max_attempts: int
    backoff_ms: int
    timeout_s: float
    private_addresses: bool


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
        host = URL(url).host or ""
        if not self._settings.private_addresses and is_ip_literal(host) and not public_address(host):
            # Refused at submit; checked again in case the router's settings changed since.
            return False, "not_public_address"
        headers = {"Content-Type": "application/json", JOB_ID_HEADER: job_id,
                   SIGNATURE_HEADER: sign(self._settings.secret, body, int(time.time()))}
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        try:
            async with self._session.post(url, data=body, headers=headers, timeout=timeout,
                                          allow_redirects=False) as response:
                await response.read()
                return 200 <= response.status < 300, f"http_{response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return False, type(error).__name__

