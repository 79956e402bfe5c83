"""The control plane's distribution session driven directly, then wired to a router session in memory. Versions
compare within one etcd cluster; a router holding a version its cluster never wrote is given the newest table."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.distribution.session import (
    TRANSITIONS,
    DistributionSession,
    NackRecord,
    SessionProtocolError,
    SessionState,
)
from data_plane.table.sync import HeldTable, RouterIdentity, SyncState, TableSyncSession
from meridian_common.table_hash import content_hash
from meridian_proto import distribution_pb2, routing_pb2

REGION = "eu-west"
C1, C2 = 0xC1, 0xC2  # two etcd clusters
HUGE = 2**63


def make_table(version: int, *, region: str = REGION, bad: bool = False, cluster: int = C1
               ) -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model="bad" if bad else "m", policy="latency-first")]
    return routing_pb2.RoutingTable(version=version, epoch=1, region=region, models=models,
                                    content_hash=content_hash(models), source="control-plane", cluster_id=cluster)


def hello(version_held: int = 5, cluster: int = C1) -> distribution_pb2.SubscribeRequest:
    return distribution_pb2.SubscribeRequest(hello=distribution_pb2.RouterHello(
        router_id="router-1", region=REGION, version_held=version_held, url="http://r1:8080",
        cluster_id_held=cluster))


def ack(version: int) -> distribution_pb2.SubscribeRequest:
    return distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=version))


def nack(version: int, reason: str = "broken") -> distribution_pb2.SubscribeRequest:
    return distribution_pb2.SubscribeRequest(nack=distribution_pb2.Nack(version=version, reason=reason))


def in_state(state: SessionState) -> DistributionSession:
    session = DistributionSession("cp-1")
    if state is SessionState.CLOSED:
        session.close()
    if state in (SessionState.IDLE, SessionState.IN_FLIGHT):
        session.receive(hello(5), now=100.0)
    if state is SessionState.IN_FLIGHT:
        assert session.offer(make_table(7)) is not None
    assert session.state is state
    return session


def fields(session: DistributionSession) -> tuple[object, ...]:
    return (session.state, session.hello, session.acked_version, session.acked_at, session.last_nack,
            session.in_flight, session.pending)


ACTIONS: dict[str, Callable[[DistributionSession], object]] = {
    "hello": lambda s: s.receive(hello(5), now=101.0),
    "empty message": lambda s: s.receive(distribution_pb2.SubscribeRequest(), now=101.0),
    "offer newer": lambda s: s.offer(make_table(9)),
    "offer held": lambda s: s.offer(make_table(5)),
    "offer other region": lambda s: s.offer(make_table(9, region="us-east")),
    "ack in flight": lambda s: s.receive(ack(7), now=102.0),
    "ack other version": lambda s: s.receive(ack(6), now=102.0),
    "nack in flight": lambda s: s.receive(nack(7), now=102.0),
    "close": lambda s: s.close(),
}

S = SessionState
# None: the event is illegal in that state and must raise, changing nothing.
EXPECTED: dict[tuple[SessionState, str], SessionState | None] = {
    (S.AWAITING_HELLO, "hello"): S.IDLE,
    (S.AWAITING_HELLO, "empty message"): None,
    (S.AWAITING_HELLO, "offer newer"): None,
    (S.AWAITING_HELLO, "offer held"): None,
    (S.AWAITING_HELLO, "offer other region"): None,
    (S.AWAITING_HELLO, "ack in flight"): None,
    (S.AWAITING_HELLO, "ack other version"): None,
    (S.AWAITING_HELLO, "nack in flight"): None,
    (S.AWAITING_HELLO, "close"): S.CLOSED,
    (S.IDLE, "hello"): None,
    (S.IDLE, "empty message"): None,
    (S.IDLE, "offer newer"): S.IN_FLIGHT,
    (S.IDLE, "offer held"): S.IDLE,
    (S.IDLE, "offer other region"): None,
    (S.IDLE, "ack in flight"): None,
    (S.IDLE, "ack other version"): None,
    (S.IDLE, "nack in flight"): None,
    (S.IDLE, "close"): S.CLOSED,
    (S.IN_FLIGHT, "hello"): None,
    (S.IN_FLIGHT, "empty message"): None,
    (S.IN_FLIGHT, "offer newer"): S.IN_FLIGHT,
    (S.IN_FLIGHT, "offer held"): S.IN_FLIGHT,
    (S.IN_FLIGHT, "offer other region"): None,
    (S.IN_FLIGHT, "ack in flight"): S.IDLE,
    (S.IN_FLIGHT, "ack other version"): None,
    (S.IN_FLIGHT, "nack in flight"): S.IDLE,
    (S.IN_FLIGHT, "close"): S.CLOSED,
    (S.CLOSED, "hello"): None,
    (S.CLOSED, "empty message"): None,
    (S.CLOSED, "offer newer"): None,
    (S.CLOSED, "offer held"): None,
    (S.CLOSED, "offer other region"): None,
    (S.CLOSED, "ack in flight"): None,
    (S.CLOSED, "ack other version"): None,
    (S.CLOSED, "nack in flight"): None,
    (S.CLOSED, "close"): None,
}


def test_expectations_cover_every_state_and_action() -> None:
    assert set(EXPECTED) == {(state, action) for state in SessionState for action in ACTIONS}
    assert set(TRANSITIONS) == set(SessionState)


@pytest.mark.parametrize(("state", "action"), list(EXPECTED), ids=lambda v: getattr(v, "value", v))
def test_every_state_and_event(state: SessionState, action: str) -> None:
    session = in_state(state)
    before = fields(session)
    expected = EXPECTED[(state, action)]
    if expected is None:
        with pytest.raises(SessionProtocolError):
            ACTIONS[action](session)
        assert fields(session) == before
    else:
        ACTIONS[action](session)
        assert session.state is expected


def test_hello_counts_as_acknowledging_the_version_held() -> None:
    session = in_state(SessionState.IDLE)
    record = session.record()
    assert (record.router_id, record.region, record.url, record.replica_id) == (
        "router-1", REGION, "http://r1:8080", "cp-1")
    assert (record.acked_version, record.acked_at) == (5, 100.0)
    assert (record.in_flight_version, record.last_nack) == (None, None)


def test_hello_must_name_the_router_and_region() -> None:
    session = DistributionSession("cp-1")
    with pytest.raises(SessionProtocolError, match="router_id and region"):
        session.receive_hello(distribution_pb2.RouterHello(region=REGION), 1.0)
    assert session.state is SessionState.AWAITING_HELLO


def test_only_newer_tables_than_held_are_sent() -> None:
    session = in_state(SessionState.IDLE)
    assert session.offer(make_table(4)) is None
    assert session.offer(make_table(5)) is None
    response = session.offer(make_table(6))
    assert response == distribution_pb2.SubscribeResponse(table=make_table(6), replica_id="cp-1")


def test_newer_tables_coalesce_while_one_is_in_flight() -> None:
    session = in_state(SessionState.IN_FLIGHT)  # 7 in flight
    for version in (8, 10, 9):
        assert session.offer(make_table(version)) is None
    assert session.pending is not None and session.pending.version == 10
    response = session.receive(ack(7), now=103.0)
    assert response is not None and response.table.version == 10
    assert (session.state, session.acked_version, session.acked_at) == (SessionState.IN_FLIGHT, 7, 103.0)
    assert session.receive(ack(10), now=104.0) is None
    assert (session.state, session.acked_version) == (SessionState.IDLE, 10)


def test_a_pending_table_no_newer_than_the_ack_is_dropped() -> None:
    session = in_state(SessionState.IN_FLIGHT)
    session.offer(make_table(6))
    assert session.pending is None
    assert session.receive(ack(7), now=103.0) is None


def test_nacked_version_is_not_resent_but_a_newer_one_is() -> None:
    session = in_state(SessionState.IN_FLIGHT)
    assert session.receive(nack(7, "model 'x' has no deployments"), now=103.0) is None
    assert session.last_nack == NackRecord(7, "model 'x' has no deployments", 103.0)
    assert session.acked_version == 5
    assert session.offer(make_table(7)) is None
    response = session.offer(make_table(8))
    assert response is not None and response.table.version == 8
    assert session.record().in_flight_version == 8


def test_nack_sends_the_coalesced_newer_table() -> None:
    session = in_state(SessionState.IN_FLIGHT)
    session.offer(make_table(9))
    response = session.receive(nack(7), now=103.0)
    assert response is not None and response.table.version == 9


def idle_holding(version: int, cluster: int = C1) -> DistributionSession:
    session = DistributionSession("cp-1")
    session.receive(hello(version, cluster), now=100.0)
    return session


@pytest.mark.parametrize(
    ("held", "offered", "sent"),
    [
        ((5, C1), (4, C2), True), ((5, C1), (5, C2), True), ((5, C1), (9, C2), True),
        ((5, 0), (4, C1), True),  # a router with the bootstrap table, or one stored before clusters
        ((5, C1), (4, 0), False), ((5, C1), (6, 0), True),  # a table without a cluster: by version
        ((HUGE, C2), (4, C1), True),
    ],
)
def test_a_table_of_another_cluster_than_the_routers_is_sent_whatever_its_version(
    held: tuple[int, int], offered: tuple[int, int], sent: bool
) -> None:
    session = idle_holding(*held)
    response = session.offer(make_table(offered[0], cluster=offered[1]))
    assert (response is not None) is sent
    if response is not None:
        assert not response.newest_in_cluster
        session.receive(ack(offered[0]), now=101.0)
        assert (session.acked_version, session.acked_cluster_id) == offered


@pytest.mark.parametrize(
    ("held", "offered", "checked"),
    [
        ((9, C1), (4, C1), True),
        ((HUGE, C1), (4, C1), True),
        ((9, C1), (9, C1), False), ((9, C1), (12, C1), False),
        ((9, C1), (4, C2), False), ((9, C1), (4, 0), False), ((9, 0), (4, C1), False),
    ],
)
def test_etcd_is_asked_only_when_the_router_holds_a_higher_version_of_the_same_cluster(
    held: tuple[int, int], offered: tuple[int, int], checked: bool
) -> None:
    assert idle_holding(*held).needs_check(make_table(offered[0], cluster=offered[1])) is checked


def test_a_router_beyond_its_cluster_gets_the_newest_table_marked_as_such() -> None:
    session = idle_holding(HUGE)
    assert session.needs_check(make_table(4)) and session.offer(make_table(4)) is None
    response = session.offer_newest(make_table(6))
    assert response == distribution_pb2.SubscribeResponse(table=make_table(6), replica_id="cp-1",
                                                          newest_in_cluster=True)
    assert not session.needs_check(make_table(4)), "asked once per version the router holds"
    session.receive(ack(6), now=101.0)
    assert (session.acked_version, session.acked_cluster_id) == (6, C1)
    assert session.offer(make_table(7)) is not None


@pytest.mark.parametrize(
    ("newest", "expected"),
    [((12, C1), "sent"), ((9, C1), "nothing"), ((4, C2), "sent"), ((6, C1), "sent as newest")],
    ids=["this-replica-lags", "router-holds-the-newest", "etcd-is-another-cluster-now", "router-beyond"],
)
def test_what_etcd_says_decides(newest: tuple[int, int], expected: str) -> None:
    session = idle_holding(9)
    assert session.needs_check(make_table(4))
    response = session.offer_newest(make_table(newest[0], cluster=newest[1]))
    outcome = "nothing" if response is None else "sent as newest" if response.newest_in_cluster else "sent"
    assert outcome == expected
    assert not session.needs_check(make_table(4))


def test_a_refused_newest_table_is_not_offered_again() -> None:
    session = idle_holding(HUGE)
    assert session.offer_newest(make_table(6)) is not None
    session.receive(nack(6, "model 'm' is broken"), now=101.0)
    assert session.offer_newest(make_table(6)) is None
    assert session.offer(make_table(7)) is None, "still below what the router holds: only etcd can say more"
    response = session.offer_newest(make_table(7))
    assert response is not None and response.newest_in_cluster


def test_nothing_is_checked_while_a_table_is_in_flight() -> None:
    session = in_state(SessionState.IN_FLIGHT)
    assert not session.needs_check(make_table(3))
    with pytest.raises(SessionProtocolError):
        session.offer_newest(make_table(3))


# In-memory wiring: the control-plane session and the router session exchange messages with no I/O.


def refuse_bad(table: routing_pb2.RoutingTable) -> None:
    if any(m.model == "bad" for m in table.models):
        raise ValueError("model 'bad' has no deployments")


class Wire:
    def __init__(self, held: int = 0, cluster: int = C1) -> None:
        self.router = TableSyncSession(RouterIdentity("router-1", REGION, "http://r1:8080"),
                                       HeldTable.of(make_table(held, cluster=cluster)), refuse_bad)
        self.server = DistributionSession("cp-1")
        self.applied: list[int] = []
        self.now = 0.0
        assert self.server.receive(self.router.connect(), self.now) is None

    def publish(self, table: routing_pb2.RoutingTable, etcd_newest: routing_pb2.RoutingTable | None = None) -> None:
        """The cache's new table; `etcd_newest` is what a read of etcd would give, as the servicer asks it."""
        if self.server.needs_check(table) and etcd_newest is not None:
            response = self.server.offer_newest(etcd_newest)
        else:
            response = self.server.offer(table)
        # Bounded: each round trip either ends or sends a strictly newer table.
        for _ in range(100):
            if response is None:
                return
            verdict = self.router.receive(response.table, newest_in_cluster=response.newest_in_cluster)
            if verdict.reply is None:
                self.applied.append(response.table.version)
                reply = self.router.applied()
            else:
                reply = verdict.reply
            self.now += 1.0
            response = self.server.receive(reply, self.now)
        raise AssertionError("the sessions did not settle")


def test_wired_sessions_apply_ack_and_nack() -> None:
    wire = Wire(held=0)
    wire.publish(make_table(3))
    assert wire.router.held.version == 3 and wire.server.acked_version == 3
    wire.publish(make_table(4, bad=True))
    assert wire.router.held.version == 3
    assert wire.server.last_nack is not None
    assert wire.server.last_nack.reason == "model 'bad' has no deployments"
    wire.publish(make_table(5))
    assert wire.applied == [3, 5] and wire.server.acked_version == 5
    assert wire.server.state is SessionState.IDLE and wire.router.state is SyncState.SUBSCRIBED


def test_wired_router_holding_a_newer_version_is_sent_nothing() -> None:
    wire = Wire(held=9)
    wire.publish(make_table(4))
    assert wire.applied == [] and wire.server.in_flight is None and wire.server.acked_version == 9
    wire.publish(make_table(4), etcd_newest=make_table(12))  # this replica lagged: etcd has a newer one
    assert wire.applied == [12]


def test_wired_router_with_a_huge_version_recovers_when_etcd_says_so() -> None:
    wire = Wire(held=HUGE)
    wire.publish(make_table(4), etcd_newest=make_table(4))
    assert wire.applied == [4] and wire.router.held.version == 4 == wire.server.acked_version
    wire.publish(make_table(5))
    assert wire.applied == [4, 5]


def test_wired_router_follows_a_rebuilt_etcd() -> None:
    wire = Wire(held=900, cluster=C1)
    wire.publish(make_table(3, cluster=C2))
    assert wire.applied == [3] and wire.router.held.cluster_id == C2
    wire.publish(make_table(4, cluster=C2))
    assert wire.applied == [3, 4]


@settings(max_examples=150, deadline=None)
@given(
    held=st.integers(0, 5),
    published=st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=30),
    answer_late=st.lists(st.booleans(), max_size=30),
)
def test_wired_sessions_converge_on_the_newest_valid_table(
    held: int, published: list[tuple[int, bool]], answer_late: list[bool]
) -> None:
    """Tables are published with growing versions; some are answered only after later ones are published,
    so coalescing is exercised. The router never goes back, never holds a NACKed table, and ends on the
    newest table when it is valid."""
    identity = RouterIdentity("router-1", REGION, "u")
    router = TableSyncSession(identity, HeldTable.of(make_table(held)), refuse_bad)
    server = DistributionSession("cp-1")
    server.receive(router.connect(), 0.0)
    outbox: list[distribution_pb2.SubscribeResponse] = []
    nacked: set[int] = set()
    version = held

    def answer_one() -> None:
        response = outbox.pop(0)
        verdict = router.receive(response.table)
        reply = router.applied() if verdict.reply is None else verdict.reply
        if reply.WhichOneof("kind") == "nack":
            nacked.add(reply.nack.version)
        more = server.receive(reply, 0.0)
        if more is not None:
            outbox.append(more)

    previous = router.held.version
    for index, (step, bad) in enumerate(published):
        version += step
        response = server.offer(make_table(version, bad=bad))
        if response is not None:
            outbox.append(response)
        assert len(outbox) <= 1, "never more than one table in flight"
        late = answer_late[index] if index < len(answer_late) else False
        if outbox and not late:
            answer_one()
        assert router.held.version >= previous and router.held.version not in nacked
        previous = router.held.version
    for _ in range(len(published) + 1):
        if not outbox:
            break
        answer_one()
    assert not outbox and server.state is SessionState.IDLE
    last_version, last_bad = version, published[-1][1]
    if not last_bad:
        assert router.held.version == last_version == server.acked_version
    assert router.held.version not in nacked
