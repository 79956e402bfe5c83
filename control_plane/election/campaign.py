"""Leader election on etcd in the shape of etcd's concurrency.Election: campaign is one transaction on the
leader key's create-revision, the leader's epoch is that create-revision, and every write the leader makes
is fenced by a transaction that checks the key is still its own. See docs/election.md.

The role a replica plays is the pure state machine in machine.py (`ElectionMachine`); `Election` is the thin
shell that makes the aetcd calls and feeds the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import aetcd
from aetcd import EventKind

from control_plane.election.lease_session import LeaseSession, SessionLost
from control_plane.election.machine import ElectionMachine, Role, Transition, Trigger
from control_plane.etcd_client import EtcdClient, EtcdWatch
from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

GUARD_RETRY_S = 0.5


# --- values that cross the shell ----------------------------------------------------------------------------


class NotLeader(RuntimeError):
    """A fenced write refused because this candidate does not hold the leader key with its epoch; nothing was
    written."""

    def __init__(self, key: bytes, epoch: int | None, reason: str, holder_epoch: int | None = None) -> None:
        self.key = key
        self.epoch = epoch
        self.reason = reason
        self.holder_epoch = holder_epoch
        holder = "no leader" if holder_epoch is None else f"the leader's epoch is {holder_epoch}"
        super().__init__(
            f"not the leader of {key.decode(errors='replace')}: {reason} (our epoch {epoch}, {holder})"
        )


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    value: bytes
    epoch: int
    mod_revision: int
    lease_id: int


@dataclass(frozen=True, slots=True)
class Fence:
    """The condition every leader write carries: the leader key still exists with our create-revision and
    our value."""

    leader_key: bytes
    epoch: int
    value: bytes


@dataclass(frozen=True, slots=True)
class PutOp:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: bytes


WriteOp = PutOp | DeleteOp
Listener = Callable[[Transition], None]


class TransitionFeed:
    """An election's role changes, queued from the moment the feed is made (not from the first `anext`, as
    an async generator would, which misses a change that happens in between) until `aclose`."""

    def __init__(self, election: Election) -> None:
        self._election = election
        self._queue: asyncio.Queue[Transition] = asyncio.Queue()
        election.add_listener(self._queue.put_nowait)

    def __aiter__(self) -> TransitionFeed:
        return self

    async def __anext__(self) -> Transition:
        return await self._queue.get()

    async def aclose(self) -> None:
        self._election.remove_listener(self._queue.put_nowait)


def leader_key(prefix: str) -> bytes:
    return f"{prefix.rstrip('/')}/leader".encode()


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


# --- the shell: aetcd calls ---------------------------------------------------------------------------------


async def fenced_transaction(client: EtcdClient, fence: Fence, ops: Sequence[WriteOp]) -> int:
    """Applies `ops` atomically only if `fence` holds; returns the revision of the write (the new table
    version). Raises NotLeader, having written nothing, otherwise."""
    if any(op.key == fence.leader_key for op in ops):
        raise ValueError(f"a fenced write cannot touch the leader key {fence.leader_key!r}")
    tx = client.transactions
    success = [tx.put(op.key, op.value) if isinstance(op, PutOp) else tx.delete(op.key) for op in ops]
    # aetcd's transaction() iterates success and failure unconditionally: both must be lists, never None.
    succeeded, responses = await client.transaction(
        compare=[tx.create(fence.leader_key) == fence.epoch, tx.value(fence.leader_key) == fence.value],
        success=[*success, tx.get(fence.leader_key)],
        failure=[tx.get(fence.leader_key)],
    )
    held = responses[-1] if responses else []
    current = held[0][1] if held else None
    if not succeeded:
        reason = "leader key is gone" if current is None else "leader key belongs to another epoch or value"
        holder_epoch = None if current is None else int(current.create_revision)
        raise NotLeader(fence.leader_key, fence.epoch, reason, holder_epoch)
    if current is None:
        raise NotLeader(fence.leader_key, fence.epoch, "leader key vanished inside the transaction")
    # The read of the leader key runs inside the transaction, so its header is the transaction's revision.
    return int(current.header.revision)


async def read_leader(client: EtcdClient, prefix: str) -> tuple[LeaderInfo | None, int]:
    """The current leader (or None) and the store revision it was read at."""
    key = leader_key(prefix)
    # get_range rather than get: aetcd's get() returns None for a missing key and so drops the revision.
    found = await client.get_range(key, key + b"\0")
    info = None
    if found:
        kv = found[0]
        info = LeaderInfo(kv.value, kv.create_revision, kv.mod_revision, kv.lease)
    return info, int(found.header.revision)


async def observe_leader(client: EtcdClient, prefix: str) -> AsyncIterator[LeaderInfo | None]:
    """Yields the current leader, then every change (None while there is none), by watching the key from the
    revision it was read at, so no change between the read and the watch is missed. Use under
    `contextlib.aclosing` so that the watch is cancelled when the caller stops early."""
    info, revision = await read_leader(client, prefix)
    yield info
    watch = await client.watch(leader_key(prefix), start_revision=revision + 1)
    try:
        async for change in watch:
            if change.kind == EventKind.DELETE:
                yield None
            else:
                kv = change.kv
                yield LeaderInfo(kv.value, kv.create_revision, kv.mod_revision, kv.lease)
    finally:
        with contextlib.suppress(aetcd.ClientError):
            await watch.cancel()


class Election:
    """One candidate for `<prefix>/leader`, bound to one LeaseSession."""

    def __init__(self, session: LeaseSession, prefix: str, value: bytes | str) -> None:
        self._session = session
        self._client = session.client
        self._key = leader_key(prefix)
        self._value = _as_bytes(value)
        self._machine = ElectionMachine()
        self._listeners: list[Listener] = []
        self._guard: asyncio.Task[None] | None = None
        session.add_done_callback(self._on_session_done)

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def value(self) -> bytes:
        return self._value

    @property
    def role(self) -> Role:
        return self._machine.role

    @property
    def epoch(self) -> int | None:
        return self._machine.epoch

    @property
    def session(self) -> LeaseSession:
        return self._session

    @property
    def is_leader(self) -> bool:
        """False from the moment the session is done, before etcd has even expired the key."""
        return self._machine.role is Role.LEADER and not self._session.done.is_set()

    def add_listener(self, listener: Listener) -> None:
        """`listener(transition)` runs synchronously on every role change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def transitions(self) -> TransitionFeed:
        """Every role change from this call on, for `async for`; use under `contextlib.aclosing`."""
        return TransitionFeed(self)

    async def wait_not_leader(self) -> Role:
        """Returns once this candidate is not (or no longer) the leader; the role it ended in."""
        if not self.is_leader:
            return self.role
        left: asyncio.Future[Role] = asyncio.get_running_loop().create_future()

        def on_transition(transition: Transition) -> None:
            if transition.lost_leadership and not left.done():
                left.set_result(transition.after)

        self.add_listener(on_transition)
        try:
            return await left
        finally:
            self.remove_listener(on_transition)

    async def campaign(self, timeout_s: float | None = None) -> int:
        """Blocks until this candidate holds the leader key and returns its epoch. Waits by watching for the
        holder's key to be deleted, never by polling. Raises SessionLost, TimeoutError, or an aetcd error."""
        if self.role is Role.LEADER:
            assert self.epoch is not None
            return self.epoch
        if self._session.done.is_set():
            raise SessionLost(f"session ended ({self._session.done_reason}); open a new one to campaign")
        self._apply(Trigger.CAMPAIGN)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._campaign_rounds()
        except BaseException as error:
            if self.role is Role.CANDIDATE:
                self._apply(Trigger.CANCELLED, reason=type(error).__name__)
                # The put may have committed even though its reply never reached us.
                await self._release_if_ours()
            raise

    async def fenced_put(self, key: bytes | str, value: bytes | str) -> int:
        return await self.fenced_txn([PutOp(_as_bytes(key), _as_bytes(value))])

    async def fenced_txn(self, ops: Sequence[WriteOp]) -> int:
        """Writes `ops` atomically if and only if this candidate still leads with its epoch; returns the
        write's revision. Raises NotLeader without touching etcd once the session is done."""
        epoch = self.epoch
        if not self.is_leader or epoch is None:
            reason = f"role is {self.role.value}"
            if self._session.done.is_set():
                reason += f", session ended ({self._session.done_reason})"
            raise NotLeader(self._key, epoch, reason)
        try:
            return await fenced_transaction(self._client, Fence(self._key, epoch, self._value), ops)
        except NotLeader as refused:
            self._deposed(epoch, refused.reason)
            raise

    async def resign(self, *, revoke_lease: bool = True) -> None:
        """Stops publishing at once, deletes the leader key only if it is still ours, then (by default)
        revokes the session's lease. Used on SIGTERM so that a follower takes over without waiting a TTL."""
        epoch = self.epoch
        if self.role is Role.LEADER and epoch is not None:
            self._apply(Trigger.RESIGNED, reason="resign")
            await self._stop_guard()
            tx = self._client.transactions
            try:
                deleted, _ = await self._client.transaction(
                    compare=[tx.create(self._key) == epoch], success=[tx.delete(self._key)], failure=[]
                )
                log.info(event("leader_resigned", key=self._key.decode(), epoch=epoch, deleted=deleted))
            except aetcd.ClientError as error:
                log.warning(event("leader_resign_failed", key=self._key.decode(), epoch=epoch,
                                  error=type(error).__name__))
        if revoke_lease:
            await self._session.close()

    async def close(self) -> None:
        await self._stop_guard()

    # --- internals ---

    async def _campaign_rounds(self) -> int:
        tx = self._client.transactions
        lease_id = self._session.lease_id
        while True:
            if self._session.done.is_set():
                raise SessionLost(f"session ended ({self._session.done_reason}) while campaigning")
            won, responses = await self._client.transaction(
                compare=[tx.create(self._key) == 0],
                success=[tx.put(self._key, self._value, lease=lease_id), tx.get(self._key)],
                failure=[tx.get(self._key)],
            )
            kv = responses[-1][0][1]
            if won or kv.lease == lease_id:
                return await self._take_office(int(kv.create_revision), kv.value)
            log.info(event("campaign_waiting", key=self._key.decode(), holder_epoch=kv.create_revision,
                           lease=f"{lease_id:x}"))
            await self._wait_for_delete(int(kv.header.revision) + 1)

    async def _take_office(self, epoch: int, held_value: bytes) -> int:
        if self._session.done.is_set():
            # The put landed after our deadline: the key goes with the lease, and we must not act on it.
            raise SessionLost(f"session ended ({self._session.done_reason}) as the campaign won")
        if held_value != self._value:
            # Our own lease already holds the key (a re-campaign on the same session) with an older value.
            tx = self._client.transactions
            proclaimed, _ = await self._client.transaction(
                compare=[tx.create(self._key) == epoch],
                success=[tx.put(self._key, self._value, lease=self._session.lease_id)],
                failure=[],
            )
            if not proclaimed:
                raise NotLeader(self._key, epoch, "leader key changed while taking office")
        self._apply(Trigger.WON, epoch=epoch, reason="campaign")
        lease = f"{self._session.lease_id:x}"
        log.info(event("leader_elected", key=self._key.decode(), epoch=epoch, lease=lease))
        self._guard = asyncio.create_task(self._guard_leadership(epoch), name=f"leader-guard-{epoch}")
        return epoch

    async def _wait_for_delete(self, start_revision: int) -> None:
        watch = await self._client.watch(self._key, start_revision=start_revision, kind=EventKind.DELETE)
        deleted = asyncio.ensure_future(_first_event(watch))
        session_done = asyncio.ensure_future(self._session.done.wait())
        try:
            await asyncio.wait({deleted, session_done}, return_when=asyncio.FIRST_COMPLETED)
            if deleted.done():
                deleted.result()
        finally:
            for waiter in (deleted, session_done):
                waiter.cancel()
            with contextlib.suppress(aetcd.ClientError):
                await watch.cancel()

    async def _guard_leadership(self, epoch: int) -> None:
        """Watches our own key while leading, so that a deletion (lease expired on the server, an operator)
        deposes us at once rather than at the next fenced write."""
        next_revision = epoch + 1
        while self.epoch == epoch and self.is_leader:
            try:
                watch = await self._client.watch(self._key, start_revision=next_revision)
                try:
                    async for change in watch:
                        next_revision = int(change.kv.mod_revision) + 1
                        if change.kind == EventKind.DELETE:
                            self._deposed(epoch, "leader key deleted")
                            return
                        if change.kv.create_revision != epoch:
                            self._deposed(epoch, "leader key re-created by another candidate")
                            return
                finally:
                    with contextlib.suppress(aetcd.ClientError):
                        await watch.cancel()
            except aetcd.RevisionCompactedError:
                # etcd compacted what this watch would replay (a re-watch late in a long term): what matters is
                # whether the key is still ours now, and the watch goes on from there.
                with contextlib.suppress(aetcd.ClientError):
                    found = await self._client.get_range(self._key, self._key + b"\0")
                    if not found or found[0].create_revision != epoch:
                        self._deposed(epoch, "leader key deleted or re-created while its history was compacted")
                        return
                    next_revision = int(found.header.revision) + 1
                    continue
            except aetcd.ClientError as error:
                log.warning(event("leader_guard_watch_failed", key=self._key.decode(), epoch=epoch,
                                  error=type(error).__name__))
            # etcd unreachable: the session's deadline decides; retry the watch in case it comes back first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._session.done.wait(), timeout=GUARD_RETRY_S)

    async def _release_if_ours(self) -> None:
        tx = self._client.transactions
        try:
            found = await self._client.get_range(self._key, self._key + b"\0")
            if found and found[0].lease == self._session.lease_id:
                await self._client.transaction(
                    compare=[tx.create(self._key) == found[0].create_revision],
                    success=[tx.delete(self._key)],
                    failure=[],
                )
        except aetcd.ClientError as error:
            log.warning(event("campaign_cleanup_failed", key=self._key.decode(), error=type(error).__name__))

    async def _stop_guard(self) -> None:
        guard = self._drop_guard()
        if guard is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await guard

    def _drop_guard(self) -> asyncio.Task[None] | None:
        """Cancels the guard unless it is the caller (which returns by itself); returns the task to await."""
        guard, self._guard = self._guard, None
        if guard is None or guard is asyncio.current_task():
            return None
        guard.cancel()
        return guard

    def _deposed(self, epoch: int, reason: str) -> None:
        if self.role is Role.LEADER and self.epoch == epoch:
            self._apply(Trigger.DEPOSED, reason=reason)
            log.warning(event("leader_deposed", key=self._key.decode(), epoch=epoch, reason=reason))
            self._drop_guard()

    def _on_session_done(self, reason: str) -> None:
        if self.role is not Role.LOST:
            was_leader = self.role is Role.LEADER
            self._apply(Trigger.SESSION_DONE, reason=reason)
            if was_leader:
                log.warning(event("leadership_lost", key=self._key.decode(), reason=reason))
        self._drop_guard()

    def _apply(self, trigger: Trigger, *, epoch: int | None = None, reason: str = "") -> Transition:
        transition = self._machine.apply(trigger, epoch=epoch, reason=reason)
        for listener in list(self._listeners):
            try:
                listener(transition)
            except Exception:
                log.exception(event("election_listener_failed", key=self._key.decode()))
        return transition


async def _first_event(watch: EtcdWatch) -> aetcd.Event | None:
    async for change in watch:
        return change
    return None
