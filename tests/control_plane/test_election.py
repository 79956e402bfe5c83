"""Leader election: the role machine driven directly, then the protocol against a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aetcd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.election.campaign import (
    GUARD_RETRY_S,
    DeleteOp,
    Election,
    Fence,
    NotLeader,
    PutOp,
    fenced_transaction,
    leader_key,
    observe_leader,
    read_leader,
)
from control_plane.election.identity import CandidateIdentity
from control_plane.election.lease_session import LeaseClock, LeaseSession, SessionLost
from control_plane.election.machine import ElectionMachine, IllegalTransition, Role, Transition, Trigger
from regions.local_services import RunningService, start_etcd
from regions.proxies import _call as proxy_call
from regions.proxies import create_proxy
from regions.stack_config import ProxySpec
from regions.toxiproxy.launcher import start_toxiproxy

TTL_S = 2
CANDIDATE_SCRIPT = Path(__file__).with_name("election_candidate.py")


def run(scenario: Coroutine[Any, Any, Any], timeout_s: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, timeout_s))


def new_prefix() -> str:
    return f"/meridian-test/{uuid.uuid4().hex[:10]}"


# --- the role machine, no etcd ------------------------------------------------------------------------------

LEGAL = {
    (Role.FOLLOWER, Trigger.CAMPAIGN): Role.CANDIDATE,
    (Role.CANDIDATE, Trigger.WON): Role.LEADER,
    (Role.CANDIDATE, Trigger.CANCELLED): Role.FOLLOWER,
    (Role.LEADER, Trigger.RESIGNED): Role.FOLLOWER,
    (Role.LEADER, Trigger.DEPOSED): Role.FOLLOWER,
    (Role.FOLLOWER, Trigger.SESSION_DONE): Role.LOST,
    (Role.CANDIDATE, Trigger.SESSION_DONE): Role.LOST,
    (Role.LEADER, Trigger.SESSION_DONE): Role.LOST,
}

PATH_TO = {
    Role.FOLLOWER: [],
    Role.CANDIDATE: [Trigger.CAMPAIGN],
    Role.LEADER: [Trigger.CAMPAIGN, Trigger.WON],
    Role.LOST: [Trigger.SESSION_DONE],
}


def machine_in(role: Role) -> ElectionMachine:
    machine = ElectionMachine()
    for trigger in PATH_TO[role]:
        machine.apply(trigger, epoch=7 if trigger is Trigger.WON else None)
    assert machine.role is role
    return machine


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("trigger", list(Trigger))
def test_every_role_and_trigger(role: Role, trigger: Trigger) -> None:
    machine = machine_in(role)
    epoch_before = machine.epoch
    expected = LEGAL.get((role, trigger))
    if expected is None:
        with pytest.raises(IllegalTransition):
            machine.apply(trigger, epoch=9)
        assert (machine.role, machine.epoch) == (role, epoch_before)
        return
    transition = machine.apply(trigger, epoch=9)
    assert transition.before is role and transition.after is expected
    assert machine.role is expected
    assert machine.epoch == (9 if expected is Role.LEADER else None)
    assert transition.lost_leadership == (role is Role.LEADER)


@pytest.mark.parametrize("epoch", [None, 0, -3])
def test_winning_needs_a_create_revision(epoch: int | None) -> None:
    machine = machine_in(Role.CANDIDATE)
    with pytest.raises(IllegalTransition):
        machine.apply(Trigger.WON, epoch=epoch)
    assert machine.role is Role.CANDIDATE


@given(st.lists(st.tuples(st.sampled_from(list(Trigger)), st.integers(1, 1000)), max_size=30))
def test_any_trigger_sequence_keeps_the_invariants(steps: list[tuple[Trigger, int]]) -> None:
    machine = ElectionMachine()
    for trigger, epoch in steps:
        before = (machine.role, machine.epoch)
        try:
            machine.apply(trigger, epoch=epoch)
        except IllegalTransition:
            assert (machine.role, machine.epoch) == before
        assert (machine.epoch is not None) == (machine.role is Role.LEADER)
        if before[0] is Role.LOST:
            assert machine.role is Role.LOST


@given(
    st.floats(0.5, 10), st.floats(0, 1000),
    st.lists(st.tuples(st.floats(0, 20), st.floats(0.5, 10)), max_size=20),
)
def test_lease_clock_never_moves_backwards(
    ttl_s: float, start: float, refreshes: list[tuple[float, float]]
) -> None:
    lease = LeaseClock.granted(start, ttl_s)
    now = start
    for step, granted in refreshes:
        now += step
        later = lease.refreshed(now, granted)
        assert later.expires_at >= lease.expires_at
        assert later.expires_at >= now + granted
        assert 0 <= later.next_refresh_in(now) <= ttl_s / 3
        assert later.expired(later.expires_at) and not later.expired(later.expires_at - 1e-3)
        lease = later


def test_candidate_identity_round_trips() -> None:
    identity = CandidateIdentity("cp-a", 4242, "http://127.0.0.1:7001", "127.0.0.1:7002")
    assert CandidateIdentity.decode(identity.encode()) == identity


# --- against a real etcd ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def candidate(
    etcd: RunningService, prefix: str, name: str, ttl_s: int = TTL_S
) -> AsyncIterator[Election]:
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        session = await LeaseSession.open(client, ttl_s)
        election = Election(session, prefix, name)
        try:
            yield election
        finally:
            await election.close()
            await session.close()


@contextlib.asynccontextmanager
async def etcd_client(etcd: RunningService) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        yield client


async def wait_for_condition(condition: Any, timeout_s: float, step_s: float = 0.02) -> float:
    """Seconds until `condition()` held; fails the test past `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"condition not met within {timeout_s} s"
        await asyncio.sleep(step_s)
    return time.monotonic() - started


def test_two_candidates_elect_exactly_one_leader(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with (
            candidate(etcd, prefix, "a") as a, candidate(etcd, prefix, "b") as b, etcd_client(etcd) as kv
        ):
            tasks = {asyncio.ensure_future(a.campaign()): a, asyncio.ensure_future(b.campaign()): b}
            done, pending = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1
            await asyncio.sleep(0.5)
            assert all(not task.done() for task in pending), "a second candidate was elected"
            winner, loser = (a, b) if tasks[next(iter(done))] is a else (b, a)
            epoch = next(iter(done)).result()
            assert winner.is_leader and winner.role is Role.LEADER and winner.epoch == epoch
            assert not loser.is_leader and loser.role is Role.CANDIDATE
            stored = await kv.get(leader_key(prefix))
            assert stored is not None
            assert stored.create_revision == epoch
            assert stored.value == winner.value
            assert stored.lease == winner.session.lease_id
            info, _ = await read_leader(kv, prefix)
            assert info is not None and (info.epoch, info.value) == (epoch, winner.value)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert loser.role is Role.FOLLOWER
            assert (await kv.get(leader_key(prefix))).create_revision == epoch  # type: ignore[union-attr]

    run(scenario())


def test_fenced_writes_return_their_revision(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with candidate(etcd, prefix, "a") as a, etcd_client(etcd) as kv:
            await a.campaign(timeout_s=5)
            table_key = f"{prefix}/tables/us-east"
            revision = await a.fenced_put(table_key, b"v1")
            stored = await kv.get(table_key.encode())
            assert stored is not None and stored.value == b"v1" and stored.mod_revision == revision
            second = await a.fenced_txn([PutOp(b"%s/tables/eu-west" % prefix.encode(), b"v2"),
                                         DeleteOp(table_key.encode())])
            assert second > revision
            assert await kv.get(table_key.encode()) is None
            stored = await kv.get(b"%s/tables/eu-west" % prefix.encode())
            assert stored is not None and stored.mod_revision == second
            with pytest.raises(ValueError):
                await a.fenced_put(a.key, b"mine")

    run(scenario())


def test_revoked_leader_cannot_write_and_stops_leading(etcd: RunningService) -> None:
    prefix = new_prefix()
    table_key = f"{prefix}/tables/us-east".encode()

    async def scenario() -> None:
        async with candidate(etcd, prefix, "a") as a, etcd_client(etcd) as kv:
            await a.campaign(timeout_s=5)
            await a.fenced_put(table_key, b"good")
            await kv.revoke_lease(a.session.lease_id)
            with pytest.raises(NotLeader):
                await a.fenced_put(table_key, b"stale")
            stored = await kv.get(table_key)
            assert stored is not None and stored.value == b"good"
            assert not a.is_leader
            # The keep-alive learns that the lease is gone at its next refresh: well within a TTL.
            await asyncio.wait_for(a.session.done.wait(), timeout=TTL_S)
            assert a.session.done_reason == "lease_expired"
            assert a.role is Role.LOST
            with pytest.raises(SessionLost):
                await a.campaign(timeout_s=1)

    run(scenario())


def test_fence_refuses_a_stale_epoch_inside_etcd(etcd: RunningService) -> None:
    """The etcd-side check alone, as a deposed leader that has not yet noticed would hit it."""
    prefix = new_prefix()
    table_key = f"{prefix}/tables/us-east".encode()

    async def scenario() -> None:
        async with (
            candidate(etcd, prefix, "a") as a, candidate(etcd, prefix, "b") as b, etcd_client(etcd) as kv
        ):
            old_epoch = await a.campaign(timeout_s=5)
            await kv.revoke_lease(a.session.lease_id)
            new_epoch = await b.campaign(timeout_s=5)
            assert new_epoch > old_epoch
            stale = Fence(a.key, old_epoch, a.value)
            with pytest.raises(NotLeader) as refused:
                await fenced_transaction(kv, stale, [PutOp(table_key, b"stale")])
            assert refused.value.holder_epoch == new_epoch
            assert await kv.get(table_key) is None
            # Same epoch number but another value is refused as well.
            with pytest.raises(NotLeader):
                await fenced_transaction(kv, Fence(b.key, new_epoch, b"impostor"), [PutOp(table_key, b"x")])
            assert await kv.get(table_key) is None
            assert await b.fenced_put(table_key, b"fresh") > new_epoch

    run(scenario())


def test_deleted_leader_key_deposes_at_once(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with candidate(etcd, prefix, "a") as a, etcd_client(etcd) as kv:
            first = await a.campaign(timeout_s=5)
            async with contextlib.aclosing(a.transitions()) as changes:
                await kv.delete(a.key)
                change = await asyncio.wait_for(anext(changes), timeout=1)
            assert (change.trigger, change.after, change.epoch) == (Trigger.DEPOSED, Role.FOLLOWER, first)
            assert not a.is_leader and not a.session.done.is_set()
            assert await a.campaign(timeout_s=5) > first

    run(scenario())


def test_the_guard_watches_on_after_etcd_compacted_its_term(etcd: RunningService, tmp_path: Path) -> None:
    """A leader whose link to etcd breaks after etcd compacted past its epoch (a long term under auto-compaction)
    cannot replay its key's history: its guard reads the key and watches on, so a deletion still deposes it at
    once instead of going unnoticed until the next fenced write."""
    prefix = new_prefix()
    toxiproxy = start_toxiproxy(tmp_path / "toxiproxy.log")
    try:
        listen = create_proxy(toxiproxy.url, ProxySpec("etcd", f"{etcd.host}:{etcd.port}", "etcd"))
        via_proxy = dataclasses.replace(etcd, port=int(listen.rsplit(":", 1)[1]))

        async def set_link(enabled: bool) -> None:
            await asyncio.to_thread(proxy_call, toxiproxy.url, "POST", "/proxies/etcd", {"enabled": enabled})

        async def scenario() -> None:
            async with candidate(via_proxy, prefix, "a", ttl_s=5) as a, etcd_client(etcd) as kv:
                epoch = await a.campaign(timeout_s=5)
                for _ in range(3):
                    await kv.put(f"{prefix}/filler".encode(), b"x")
                compacted = (await kv.get_range(a.key, a.key + b"\0")).header.revision
                await kv.compact(compacted, physical=True)
                assert compacted > epoch + 1
                await set_link(False)
                await asyncio.sleep(0.3)
                await set_link(True)
                await asyncio.sleep(3 * GUARD_RETRY_S)  # the guard's watch broke; it watches again meanwhile
                assert a.is_leader
                async with contextlib.aclosing(a.transitions()) as changes:
                    await kv.delete(a.key)
                    change = await asyncio.wait_for(anext(changes), timeout=2)
                assert (change.trigger, change.epoch) == (Trigger.DEPOSED, epoch)

        run(scenario())
    finally:
        toxiproxy.stop()


def test_resign_hands_over_promptly(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with candidate(etcd, prefix, "a") as a, candidate(etcd, prefix, "b") as b:
            first = await a.campaign(timeout_s=5)
            waiting = asyncio.ensure_future(b.campaign(timeout_s=10))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            started = time.monotonic()
            await a.resign()
            second = await asyncio.wait_for(waiting, timeout=2)
            assert time.monotonic() - started < 1.0
            assert second > first
            assert b.is_leader and not a.is_leader
            assert a.role is Role.LOST and a.session.done_reason == "closed"
            with pytest.raises(NotLeader):
                await a.fenced_put(f"{prefix}/tables/x", b"late")

    run(scenario())


def test_campaign_timeout_leaves_the_holder_alone(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with (
            candidate(etcd, prefix, "a") as a, candidate(etcd, prefix, "b") as b, etcd_client(etcd) as kv
        ):
            epoch = await a.campaign(timeout_s=5)
            with pytest.raises(TimeoutError):
                await b.campaign(timeout_s=0.3)
            assert b.role is Role.FOLLOWER
            info, _ = await read_leader(kv, prefix)
            assert info is not None and info.epoch == epoch and a.is_leader

    run(scenario())


def test_observer_sees_every_leader_change(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        async with etcd_client(etcd) as kv, contextlib.aclosing(observe_leader(kv, prefix)) as changes:
            assert await anext(changes) is None
            async with candidate(etcd, prefix, "a") as a:
                epoch = await a.campaign(timeout_s=5)
                seen = await asyncio.wait_for(anext(changes), timeout=2)
                assert seen is not None and (seen.epoch, seen.value) == (epoch, b"a")
                await a.resign()
                assert await asyncio.wait_for(anext(changes), timeout=2) is None

    run(scenario())


def test_killed_leader_is_replaced_within_the_ttl(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> float:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CANDIDATE_SCRIPT), "--port", str(etcd.port), "--prefix", prefix,
            "--id", "sub", "--ttl-s", str(TTL_S), stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
            assert line.startswith(b"leader "), line
            sub_epoch = int(line.split()[1])
            async with candidate(etcd, prefix, "b") as b:
                waiting = asyncio.ensure_future(b.campaign(timeout_s=15))
                await asyncio.sleep(0.3)
                assert not waiting.done()
                killed_at = time.monotonic()
                process.kill()
                await process.wait()
                epoch = await asyncio.wait_for(waiting, timeout=TTL_S + 3)
                elapsed = time.monotonic() - killed_at
                assert epoch > sub_epoch and b.is_leader
                return elapsed
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    elapsed = run(scenario())
    assert elapsed <= TTL_S + 1.0, f"took {elapsed:.2f} s to replace a killed leader (TTL {TTL_S} s)"


def test_sigterm_leader_resigns_and_hands_over_at_once(etcd: RunningService) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CANDIDATE_SCRIPT), "--port", str(etcd.port), "--prefix", prefix,
            "--id", "sub", "--ttl-s", "5", stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
            assert line.startswith(b"leader "), line
            async with candidate(etcd, prefix, "b") as b:
                waiting = asyncio.ensure_future(b.campaign(timeout_s=10))
                await asyncio.sleep(0.3)
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(waiting, timeout=3)
                # Far below the 5 s TTL: the key was deleted, not left to expire.
                assert time.monotonic() - started < 1.5
                assert await asyncio.wait_for(process.wait(), timeout=5) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    run(scenario())


def test_leadership_is_lost_when_etcd_goes_away(tmp_path: Path) -> None:
    own_etcd = start_etcd(tmp_path / "data", tmp_path / "etcd.log")
    prefix = new_prefix()

    async def scenario() -> None:
        async with candidate(own_etcd, prefix, "a") as a:
            await a.campaign(timeout_s=5)
            seen: list[Transition] = []
            a.add_listener(seen.append)
            lost = asyncio.ensure_future(a.wait_not_leader())
            own_etcd.kill()
            await wait_for_condition(lambda: not a.is_leader, timeout_s=TTL_S + 1.0)
            assert await asyncio.wait_for(lost, timeout=1) is Role.LOST
            assert a.session.done.is_set() and a.session.done_reason == "keepalive_timeout"
            assert [t.trigger for t in seen] == [Trigger.SESSION_DONE] and seen[0].lost_leadership
            started = time.monotonic()
            with pytest.raises(NotLeader):
                await a.fenced_put(f"{prefix}/tables/x", b"blind")
            assert time.monotonic() - started < 0.1, "a lost leader must not even try etcd"

    try:
        run(scenario())
    finally:
        own_etcd.stop()
