"""An etcd client over every endpoint of a cluster. aetcd's Client talks to one host:port, so this one holds a
client for one endpoint at a time and moves to the next (endpoint_ring.py) when a call or a watch through it
fails for want of its member: unreachable, timed out, or without a raft leader.

Leases and keys are cluster state, not a member's: the session's lease and the leader key survive the move as
long as a keep-alive gets through within the lease's TTL. Reads, keep-alives and new watches are retried once
on the next member, so a member's loss costs them nothing; writes are not (one may have committed before its
reply was lost), so their callers, which all retry, see the error once. A watch broken by the move raises, and
its owner watches again from the revision it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd

from control_plane.endpoint_ring import EndpointRing
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

T = TypeVar("T")

# What says "this member cannot serve us", as opposed to a refusal (a failed compare, a bad argument).
MEMBER_FAILURES = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, aetcd.WatchTimeoutError)
RETIRE_MARGIN_S = 0.5


class EtcdEndpointError(ValueError):
    """An endpoint this client cannot use; the message names it and says what to give instead."""


def etcd_host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    if parts.scheme != "http":
        # aetcd 1.0 opens insecure channels only; refusing beats silently talking plaintext to an https URL.
        raise EtcdEndpointError(f"etcd endpoint {endpoint!r}: only http:// endpoints are supported (aetcd has no "
                                "TLS)")
    if parts.hostname is None or parts.port is None:
        raise EtcdEndpointError(f"etcd endpoint {endpoint!r} must look like http://host:port")
    return parts.hostname, parts.port


class ClusterWatch:
    """An aetcd Watch that reports a broken stream to its client (which moves to another member), and that
    raises, rather than ends quietly, when the move closed the stream under it."""

    def __init__(self, watch: aetcd.Watch, on_failure: Callable[[BaseException], None], endpoint: str) -> None:
        self._watch = watch
        self._on_failure = on_failure
        self._endpoint = endpoint
        self._cancelled = False

    def __aiter__(self) -> AsyncIterator[aetcd.Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[aetcd.Event]:
        try:
            async for change in self._watch:
                yield change
        except MEMBER_FAILURES as error:
            self._on_failure(error)
            raise
        if not self._cancelled:
            raise aetcd.ConnectionFailedError(f"the watch on {self._endpoint} ended: the client moved to another "
                                              "etcd member")

    async def cancel(self) -> None:
        self._cancelled = True
        # aetcd's cancel goes through its client's watcher, which close() drops: once the client was retired,
        # the stream and this watch went with it, and there is nothing left to cancel.
        with contextlib.suppress(AttributeError):
            await self._watch.cancel()


class EtcdClusterClient:
    """The subset of aetcd.Client that Meridian uses, over every endpoint of `endpoints` in order."""

    def __init__(self, endpoints: tuple[str, ...], *, timeout_s: float) -> None:
        for endpoint in endpoints:
            etcd_host_port(endpoint)
        self._timeout_s = timeout_s
        self._ring = EndpointRing(endpoints)
        self._client = self._client_for(self._ring.current)
        self._retired: dict[asyncio.Task[None], aetcd.Client] = {}

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self._ring.current

    @property
    def transactions(self) -> Any:
        return self._client.transactions

    # --- reads, leases and watches: retried once on the next member ----------------------------------------

    async def get(self, key: bytes, **options: Any) -> Any:
        return await self._retried(lambda client: client.get(key, **options))

    async def get_range(self, key: bytes, range_end: bytes, **options: Any) -> Any:
        return await self._retried(lambda client: client.get_range(key, range_end, **options))

    async def get_prefix(self, prefix: bytes, **options: Any) -> Any:
        return await self._retried(lambda client: client.get_prefix(prefix, **options))

    async def refresh_lease(self, lease_id: int) -> Any:
        return await self._retried(lambda client: client.refresh_lease(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._retried(lambda client: client.revoke_lease(lease_id))

    async def lease(self, ttl_s: int) -> Any:
        # A grant whose reply was lost leaves an unused lease that expires by itself: safe to try elsewhere.
        return await self._retried(lambda client: client.lease(ttl_s))

    async def watch(self, key: bytes, **options: Any) -> ClusterWatch:
        return await self._retried(lambda client: client.watch(key, **options), watching=True)

    async def watch_prefix(self, prefix: bytes, **options: Any) -> ClusterWatch:
        return await self._retried(lambda client: client.watch_prefix(prefix, **options), watching=True)

    # --- writes: once ---------------------------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, **options: Any) -> Any:
        return await self._once(lambda client: client.put(key, value, **options))

    async def transaction(self, compare: list[Any], success: list[Any], failure: list[Any]) -> Any:
        return await self._once(lambda client: client.transaction(compare=compare, success=success, failure=failure))

    async def close(self) -> None:
        for task, client in list(self._retired.items()):
            task.cancel()
            await _close_quietly(client)
        await self._client.close()

    # --- internals ------------------------------------------------------------------------------------------

    def _client_for(self, endpoint: str) -> aetcd.Client:
        host, port = etcd_host_port(endpoint)
        return aetcd.Client(host=host, port=port, timeout=self._timeout_s)

    async def _once(self, call: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        client, generation = self._client, self._ring.generation
        try:
            result = await call(client)
        except MEMBER_FAILURES as error:
            self._member_failed(generation, error)
            raise
        self._member_answered(generation)
        return result

    async def _retried(self, call: Callable[[aetcd.Client], Awaitable[Any]], *, watching: bool = False) -> Any:
        for attempt in (1, 2):
            client, generation, endpoint = self._client, self._ring.generation, self._ring.current
            try:
                result = await call(client)
            except MEMBER_FAILURES as error:
                self._member_failed(generation, error)
                if attempt == 2 or self._ring.generation == generation:
                    raise
                continue
            self._member_answered(generation)
            if not watching:
                return result
            return ClusterWatch(result, lambda error, g=generation: self._member_failed(g, error), endpoint)
        raise AssertionError("unreachable")

    def _member_failed(self, generation: int, error: BaseException) -> None:
        before = self._ring
        self._ring = before.after_failure(generation)
        if self._ring is before:
            return
        retired, self._client = self._client, self._client_for(self._ring.current)
        # One line per move while members fail one at a time; one line when a whole round has failed (etcd out
        # of reach: the moves go on, quietly, until a call succeeds).
        if not self._ring.all_failed:
            log.warning(event("etcd_endpoint_switched", failed=before.current, to=self._ring.current,
                              error=type(error).__name__))
        elif not before.all_failed:
            log.warning(event("etcd_endpoints_all_failing", endpoints=len(self._ring.endpoints),
                              error=type(error).__name__, action="trying each in turn until one answers"))
        task = asyncio.get_running_loop().create_task(self._retire(retired), name="etcd-client-retired")
        self._retired[task] = retired
        task.add_done_callback(lambda done: self._retired.pop(done, None))

    def _member_answered(self, generation: int) -> None:
        before = self._ring
        self._ring = before.after_success(generation)
        if before.all_failed and not self._ring.all_failed:
            log.info(event("etcd_endpoint_answering", endpoint=self._ring.current))

    async def _retire(self, client: aetcd.Client) -> None:
        # Calls still in flight through the old client end on their own first (each has a deadline of timeout_s):
        # grpc would cancel them when their channel closes, and a cancellation is not an error their callers
        # handle. Closing then ends the old client's watches; each raises to its owner, which watches again
        # through the new client.
        await asyncio.sleep(self._timeout_s + RETIRE_MARGIN_S)
        await _close_quietly(client)


async def _close_quietly(client: aetcd.Client) -> None:
    # The member is gone or failing: what its channel says while closing adds nothing to the switch's log line.
    with contextlib.suppress(aetcd.ClientError, OSError):
        await client.close()


EtcdClient = aetcd.Client | EtcdClusterClient
"""What the control plane's etcd code takes: a replica's cluster client, or a plain aetcd client (tests, tools)."""
EtcdWatch = aetcd.Watch | ClusterWatch
