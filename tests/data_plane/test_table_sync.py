"""The router's table-sync session driven directly: every (state, event) pair, the rules that relate a received
table to the held one (versions compare within one etcd cluster), the verdicts, properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.table.sync import (
    RULES,
    TRANSITIONS,
    HeldTable,
    Outcome,
    Relation,
    RouterIdentity,
    SyncProtocolError,
    SyncState,
    TableSyncSession,
    relation,
)
from meridian_common.table_hash import content_hash
from meridian_proto import distribution_pb2, routing_pb2

REGION = "eu-west"
IDENTITY = RouterIdentity("router-1", REGION, "http://127.0.0.1:8080")
C1, C2 = 0xC1, 0xC2  # two etcd clusters
HUGE = 2**63  # a version no real etcd reaches: a table some other server streamed


def make_table(
    version: int, *, variant: str = "a", region: str = REGION, bad: bool = False, cluster: int = C1
) -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model=f"model-{variant}", policy="latency-first")]
    if bad:
        models.append(routing_pb2.ModelRoute(model="bad"))
    return routing_pb2.RoutingTable(
        version=version, epoch=1, region=region, content_hash=content_hash(models), models=models,
        source="control-plane", cluster_id=cluster,
    )


def validate(table: routing_pb2.RoutingTable) -> None:
    if any(m.model == "bad" for m in table.models):
        raise ValueError("model 'bad' has no deployments")


def new_session(held_version: int = 5, validator: Callable[[routing_pb2.RoutingTable], None] = validate
                ) -> TableSyncSession:
    return TableSyncSession(IDENTITY, HeldTable.of(make_table(held_version)), validator)


def in_state(state: SyncState) -> TableSyncSession:
    session = new_session()
    if state is not SyncState.DISCONNECTED:
        session.connect()
    if state is SyncState.APPLYING:
        assert session.receive(make_table(7)).outcome is Outcome.APPLY
    assert session.state is state
    return session


# Each action fires one SyncEvent (the table actions fire TABLE_ACCEPTED or TABLE_ANSWERED).
ACTIONS: dict[str, Callable[[TableSyncSession], object]] = {
    "connect": lambda s: s.connect(),
    "newer valid table": lambda s: s.receive(make_table(9)),
    "same table": lambda s: s.receive(make_table(5)),
    "older table": lambda s: s.receive(make_table(3)),
    "invalid table": lambda s: s.receive(make_table(9, bad=True)),
    "applied": lambda s: s.applied(),
    "apply failed": lambda s: s.apply_failed("snapshot swap failed"),
    "disconnect": lambda s: s.disconnect(),
}

S = SyncState
EXPECTED: dict[tuple[SyncState, str], SyncState | None] = {
    (S.DISCONNECTED, "connect"): S.SUBSCRIBED,
    (S.DISCONNECTED, "newer valid table"): None,
    (S.DISCONNECTED, "same table"): None,
    (S.DISCONNECTED, "older table"): None,
    (S.DISCONNECTED, "invalid table"): None,
    (S.DISCONNECTED, "applied"): None,
    (S.DISCONNECTED, "apply failed"): None,
    (S.DISCONNECTED, "disconnect"): None,
    (S.SUBSCRIBED, "connect"): None,
    (S.SUBSCRIBED, "newer valid table"): S.APPLYING,
    (S.SUBSCRIBED, "same table"): S.SUBSCRIBED,
    (S.SUBSCRIBED, "older table"): S.SUBSCRIBED,
    (S.SUBSCRIBED, "invalid table"): S.SUBSCRIBED,
    (S.SUBSCRIBED, "applied"): None,
    (S.SUBSCRIBED, "apply failed"): None,
    (S.SUBSCRIBED, "disconnect"): S.DISCONNECTED,
    (S.APPLYING, "connect"): None,
    (S.APPLYING, "newer valid table"): None,
    (S.APPLYING, "same table"): None,
    (S.APPLYING, "older table"): None,
    (S.APPLYING, "invalid table"): None,
    (S.APPLYING, "applied"): S.SUBSCRIBED,
    (S.APPLYING, "apply failed"): S.SUBSCRIBED,
    (S.APPLYING, "disconnect"): None,
}


def test_expectations_cover_every_state_and_action() -> None:
    assert set(EXPECTED) == {(state, action) for state in SyncState for action in ACTIONS}
    assert set(TRANSITIONS) == set(SyncState)


@pytest.mark.parametrize(("state", "action"), list(EXPECTED), ids=lambda v: getattr(v, "value", v))
def test_every_state_and_event(state: SyncState, action: str) -> None:
    session = in_state(state)
    before = (session.state, session.held, session.last_nack, session._applying)
    expected = EXPECTED[(state, action)]
    if expected is None:
        with pytest.raises(SyncProtocolError):
            ACTIONS[action](session)
        assert (session.state, session.held, session.last_nack, session._applying) == before
    else:
        ACTIONS[action](session)
        assert session.state is expected


def test_hello_carries_the_held_version_and_identity() -> None:
    request = new_session(held_version=12).connect()
    assert request.WhichOneof("kind") == "hello"
    assert request.hello == distribution_pb2.RouterHello(
        router_id="router-1", region=REGION, version_held=12, url="http://127.0.0.1:8080", cluster_id_held=C1
    )


def test_newer_valid_table_is_applied_then_acked() -> None:
    session = in_state(SyncState.SUBSCRIBED)
    table = make_table(9)
    verdict = session.receive(table)
    assert (verdict.outcome, verdict.reply) == (Outcome.APPLY, None)
    assert session.held.version == 5, "nothing is held before the shell reports it applied"
    assert session.applied() == distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=9))
    assert session.held == HeldTable(9, table.content_hash, C1)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (make_table(3), "older than held version 5"),
        (make_table(5, variant="other"), "older than held version 5"),
        (make_table(9, bad=True), "model 'bad' has no deployments"),
        (make_table(9, region="us-east"), "table is for region 'us-east', this router serves 'eu-west'"),
    ],
    ids=["older", "same-version-other-content", "invalid", "other-region"],
)
def test_refused_tables_are_nacked_with_the_reason(table: routing_pb2.RoutingTable, reason: str) -> None:
    session = in_state(SyncState.SUBSCRIBED)
    held = session.held
    verdict = session.receive(table)
    assert verdict.outcome in (Outcome.REFUSED, Outcome.INVALID)
    assert verdict.reply == distribution_pb2.SubscribeRequest(
        nack=distribution_pb2.Nack(version=table.version, reason=reason)
    )
    assert session.held == held
    assert session.last_nack is not None and session.last_nack.reason == reason


# held (version, cluster), received (version, cluster, content variant), newest_in_cluster -> relation.
RELATIONS: list[tuple[str, tuple[int, int], tuple[int, int, str], bool, Relation]] = [
    ("newer", (5, C1), (9, C1, "b"), False, Relation.NEWER),
    ("newer, also the newest", (5, C1), (9, C1, "b"), True, Relation.NEWER),
    ("same", (5, C1), (5, C1, "a"), False, Relation.SAME),
    ("same version, other content", (5, C1), (5, C1, "b"), False, Relation.CONFLICTING),
    ("older", (5, C1), (3, C1, "b"), False, Relation.OLDER),
    ("older, but the newest the cluster has", (5, C1), (3, C1, "b"), True, Relation.BEYOND_CLUSTER),
    ("huge held version, older table", (HUGE, C1), (3, C1, "b"), False, Relation.OLDER),
    ("huge held version, the cluster's newest", (HUGE, C1), (3, C1, "b"), True, Relation.BEYOND_CLUSTER),
    ("other cluster, lower version", (5, C1), (3, C2, "b"), False, Relation.OTHER_CLUSTER),
    ("other cluster, same version", (5, C1), (5, C2, "a"), False, Relation.OTHER_CLUSTER),
    ("other cluster, higher version", (5, C1), (9, C2, "b"), False, Relation.OTHER_CLUSTER),
    ("huge held version of another cluster", (HUGE, C2), (3, C1, "b"), False, Relation.OTHER_CLUSTER),
    ("bootstrap table, first cluster", (0, 0), (3, C1, "b"), False, Relation.FIRST_CLUSTER),
    ("stored before clusters, lower version", (9, 0), (3, C1, "b"), False, Relation.FIRST_CLUSTER),
    ("table without a cluster, older", (5, C1), (3, 0, "b"), False, Relation.OLDER),
    ("table without a cluster, never the newest", (5, C1), (3, 0, "b"), True, Relation.OLDER),
    ("table without a cluster, newer", (5, C1), (9, 0, "b"), False, Relation.NEWER),
]


@pytest.mark.parametrize(("held", "received", "newest", "expected"), [c[1:] for c in RELATIONS],
                         ids=[c[0] for c in RELATIONS])
def test_relation_of_a_received_table_to_the_held_one(
    held: tuple[int, int], received: tuple[int, int, str], newest: bool, expected: Relation
) -> None:
    version, cluster, variant = received
    held_table = HeldTable.of(make_table(held[0], cluster=held[1]))
    table = make_table(version, cluster=cluster, variant=variant)
    assert relation(held_table, table, newest) is expected
    session = TableSyncSession(IDENTITY, held_table, validate)
    session.connect()
    verdict = session.receive(table, newest_in_cluster=newest)
    assert (verdict.relation, verdict.outcome) == (expected, RULES[expected].outcome)
    if verdict.outcome is Outcome.APPLY:
        assert session.applied().ack.version == version
        assert session.held == HeldTable.of(table)


def test_every_relation_has_a_rule_and_the_resyncs_say_so() -> None:
    assert set(RULES) == set(Relation)
    taken = {r for r, rule in RULES.items() if rule.outcome is Outcome.APPLY}
    assert taken == {Relation.NEWER, Relation.FIRST_CLUSTER, Relation.OTHER_CLUSTER, Relation.BEYOND_CLUSTER}
    assert {r: rule.resync for r, rule in RULES.items() if rule.resync} == {
        Relation.OTHER_CLUSTER: "table_cluster_changed", Relation.BEYOND_CLUSTER: "table_history_rewound"}


def test_a_resync_is_still_checked_before_it_is_taken() -> None:
    session = new_session(held_version=HUGE)
    session.connect()
    verdict = session.receive(make_table(3, bad=True), newest_in_cluster=True)
    assert (verdict.outcome, verdict.relation) == (Outcome.INVALID, Relation.BEYOND_CLUSTER)
    assert session.held.version == HUGE
    verdict = session.receive(make_table(3, region="us-east", cluster=C2))
    assert (verdict.outcome, verdict.relation) == (Outcome.INVALID, Relation.OTHER_CLUSTER)
    assert verdict.reason == "table is for region 'us-east', this router serves 'eu-west'"


def test_the_held_table_again_is_acked_without_applying() -> None:
    session = in_state(SyncState.SUBSCRIBED)
    verdict = session.receive(make_table(5))
    assert verdict.outcome is Outcome.ALREADY_HELD
    assert verdict.reply == distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=5))
    assert session.last_nack is None


def test_failed_apply_is_nacked_and_keeps_the_previous_table() -> None:
    session = in_state(SyncState.APPLYING)
    reply = session.apply_failed("snapshot swap failed")
    assert reply.nack == distribution_pb2.Nack(version=7, reason="snapshot swap failed")
    assert session.held.version == 5


def test_a_crashing_validator_costs_a_nack_not_the_session() -> None:
    def broken(table: routing_pb2.RoutingTable) -> None:
        raise KeyError("deployments")

    session = new_session(validator=broken)
    session.connect()
    verdict = session.receive(make_table(9))
    assert verdict.outcome is Outcome.INVALID
    assert verdict.reason.startswith("validator failed: KeyError")


def test_validator_is_not_called_for_illegal_or_refused_tables() -> None:
    calls: list[int] = []
    session = new_session(validator=lambda t: calls.append(t.version))
    with pytest.raises(SyncProtocolError):
        session.receive(make_table(9))
    session.connect()
    session.receive(make_table(2))
    assert calls == []


def test_session_survives_reconnects_and_says_what_it_holds() -> None:
    session = in_state(SyncState.SUBSCRIBED)
    session.receive(make_table(8))
    session.applied()
    session.disconnect()
    assert session.connect().hello.version_held == 8


# A table's validity and whether applying it works depend only on its content, as in the router.
table_draws = st.lists(
    st.tuples(st.integers(0, 12), st.sampled_from("abc"), st.booleans(), st.booleans(), st.sampled_from([C1, C2]),
              st.booleans()),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(draws=table_draws, reconnect_every=st.integers(1, 10))
def test_the_version_goes_back_only_on_a_resync_and_invalid_tables_never_become_current(
    draws: list[tuple[int, str, bool, bool, int, bool]], reconnect_every: int
) -> None:
    session = new_session(held_version=0)
    session.connect()
    nacked: set[tuple[int, int, str]] = set()
    previous = session.held
    for index, (version, variant, bad, apply_breaks, cluster, newest) in enumerate(draws):
        table = make_table(version, variant=variant + ("!" if apply_breaks else ""), bad=bad, cluster=cluster)
        verdict = session.receive(table, newest_in_cluster=newest)
        if verdict.outcome is Outcome.APPLY:
            reply = session.apply_failed("swap failed") if apply_breaks else session.applied()
        else:
            assert verdict.reply is not None
            reply = verdict.reply
        if reply.WhichOneof("kind") == "nack":
            # Refused as older it may come back as the cluster's newest; invalid (by content) it never becomes current.
            if verdict.outcome is not Outcome.REFUSED:
                nacked.add((cluster, table.version, table.content_hash))
            assert session.held == previous
        else:
            assert reply.ack.version == session.held.version == table.version
        if session.held.version < previous.version:
            assert session.held.cluster_id != previous.cluster_id or newest, "back in one cluster, unasked"
        assert (session.held.cluster_id, session.held.version, session.held.content_hash) not in nacked
        assert session.state is SyncState.SUBSCRIBED
        previous = session.held
        if index % reconnect_every == 0:
            session.disconnect()
            hello = session.connect().hello
            assert (hello.version_held, hello.cluster_id_held) == (previous.version, previous.cluster_id)
