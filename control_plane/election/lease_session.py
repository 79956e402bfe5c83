"""An etcd lease kept alive in the background, with a `done` signal set the moment the lease can no longer
be proven alive: revoked, expired, or not refreshed within its TTL. The shape of etcd's concurrency.Session.

aetcd has no keep-alive stream of its own: `refresh_lease` sends one LeaseKeepAlive request per call, so the
loop, the deadline and the done signal live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import aetcd

from control_plane.etcd_client import EtcdClient
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 3
REFRESHES_PER_TTL = 3

Clock = Callable[[], float]
DoneCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class LeaseClock:
    """The local estimate of when the lease ends. It counts from when a request was *sent*, never from when
    its reply arrived, so it is never later than the server's own deadline and a holder stops acting on the
    lease before etcd could have given its keys to anyone else."""

    ttl_s: float
    expires_at: float

    @classmethod
    def granted(cls, sent_at: float, ttl_s: float) -> LeaseClock:
        return cls(ttl_s, sent_at + ttl_s)

    def refreshed(self, sent_at: float, ttl_s: float) -> LeaseClock:
        return replace(self, expires_at=max(self.expires_at, sent_at + ttl_s))

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def next_refresh_in(self, now: float) -> float:
        return max(0.0, min(self.ttl_s / REFRESHES_PER_TTL, self.expires_at - now))

    def budget(self, now: float) -> float:
        return max(0.0, self.expires_at - now)


class SessionLost(RuntimeError):
    """The session's lease is gone or could not be refreshed in time; open a new session to continue."""


class LeaseSession:
    """Open with `await LeaseSession.open(client, ttl_s)`; close with `await session.close()`."""

    def __init__(self, client: EtcdClient, lease_id: int, lease_clock: LeaseClock, *, clock: Clock) -> None:
        self._client = client
        self._lease_id = lease_id
        self._lease_clock = lease_clock
        self._clock = clock
        self._done = asyncio.Event()
        self._done_reason: str | None = None
        self._callbacks: list[DoneCallback] = []
        self._keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, client: EtcdClient, ttl_s: int = DEFAULT_TTL_S, *, clock: Clock = time.monotonic
    ) -> LeaseSession:
        sent_at = clock()
        lease = await client.lease(ttl_s)
        session = cls(client, int(lease.id), LeaseClock.granted(sent_at, float(lease.ttl)), clock=clock)
        session._keepalive = asyncio.create_task(session._keep_alive(), name=f"lease-keepalive-{lease.id:x}")
        log.info(event("lease_session_opened", lease=f"{lease.id:x}", ttl_s=lease.ttl))
        return session

    @property
    def client(self) -> EtcdClient:
        return self._client

    @property
    def lease_id(self) -> int:
        return self._lease_id

    @property
    def ttl_s(self) -> float:
        return self._lease_clock.ttl_s

    @property
    def done(self) -> asyncio.Event:
        return self._done

    @property
    def done_reason(self) -> str | None:
        return self._done_reason

    def remaining_s(self) -> float:
        """Time left on the local, conservative estimate of the lease; 0 once done."""
        return 0.0 if self._done.is_set() else self._lease_clock.budget(self._clock())

    def add_done_callback(self, callback: DoneCallback) -> None:
        """`callback(reason)` runs synchronously when the session ends, at once if it already has."""
        if self._done_reason is not None:
            callback(self._done_reason)
        else:
            self._callbacks.append(callback)

    async def wait_done(self) -> str:
        await self._done.wait()
        return self._done_reason or "unknown"

    def orphan(self) -> None:
        """Stops refreshing without revoking: the lease runs out on its own within its TTL."""
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._finish("closed")

    async def close(self, *, revoke: bool = True) -> None:
        """Stops the keep-alive and revokes the lease, waiting at most a TTL (past it the lease is gone)."""
        keepalive = self._keepalive
        self.orphan()
        if keepalive is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        if not revoke:
            return
        try:
            await asyncio.wait_for(self._client.revoke_lease(self._lease_id), timeout=self.ttl_s)
            log.info(event("lease_revoked", lease=f"{self._lease_id:x}"))
        except (aetcd.ClientError, TimeoutError) as error:
            log.warning(event("lease_revoke_failed", lease=f"{self._lease_id:x}", error=type(error).__name__))

    def _finish(self, reason: str) -> None:
        if self._done_reason is not None:
            return
        self._done_reason = reason
        self._done.set()
        log.log(
            logging.INFO if reason == "closed" else logging.WARNING,
            event("lease_session_done", lease=f"{self._lease_id:x}", reason=reason),
        )
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:
                log.exception(event("lease_done_callback_failed", lease=f"{self._lease_id:x}"))

    async def _keep_alive(self) -> None:
        while self._done_reason is None:
            await asyncio.sleep(self._lease_clock.next_refresh_in(self._clock()))
            sent_at = self._clock()
            if self._lease_clock.expired(sent_at):
                self._finish("keepalive_timeout")
                return
            try:
                reply = await asyncio.wait_for(
                    self._client.refresh_lease(self._lease_id), timeout=self._lease_clock.budget(sent_at)
                )
            except (aetcd.ClientError, TimeoutError) as error:
                reply, failure = None, type(error).__name__
            else:
                failure = "stream closed without a reply" if reply is None else ""
            if reply is None:
                remaining_s = round(self._lease_clock.budget(self._clock()), 3)
                log.warning(event("lease_refresh_failed", lease=f"{self._lease_id:x}", error=failure,
                                  remaining_s=remaining_s))
                continue
            # etcd answers a keep-alive for an unknown (revoked or expired) lease with TTL 0.
            if reply.TTL <= 0:
                self._finish("lease_expired")
                return
            self._lease_clock = self._lease_clock.refreshed(sent_at, float(reply.TTL))
