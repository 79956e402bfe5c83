"""The router's side of table distribution as a pure state machine: which tables to apply, what to answer.

No I/O (h11's shape): the subscriber feeds it stream events and sends the SubscribeRequests it returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from meridian_common.table_distribution import NackRecord
from meridian_proto import distribution_pb2, routing_pb2

Validate = Callable[[routing_pb2.RoutingTable], None]


class SyncState(enum.Enum):
    DISCONNECTED = "disconnected"
    SUBSCRIBED = "subscribed"  # hello sent; tables may arrive
    APPLYING = "applying"  # a table passed every check; the shell is swapping it in


class SyncEvent(enum.Enum):
    CONNECT = "connect"
    TABLE_ACCEPTED = "table-accepted"  # newer and valid: to be applied, answered afterwards
    TABLE_ANSWERED = "table-answered"  # refused, invalid or already held: answered at once
    APPLIED = "applied"
    APPLY_FAILED = "apply-failed"
    DISCONNECT = "disconnect"


# Every legal transition; anything absent raises SyncProtocolError and changes nothing.
TRANSITIONS: dict[SyncState, dict[SyncEvent, SyncState]] = {
    SyncState.DISCONNECTED: {SyncEvent.CONNECT: SyncState.SUBSCRIBED},
    SyncState.SUBSCRIBED: {
        SyncEvent.TABLE_ACCEPTED: SyncState.APPLYING,
        SyncEvent.TABLE_ANSWERED: SyncState.SUBSCRIBED,
        SyncEvent.DISCONNECT: SyncState.DISCONNECTED,
    },
    # No DISCONNECT here: the shell applies synchronously, so a stream cannot end mid-apply.
    SyncState.APPLYING: {
        SyncEvent.APPLIED: SyncState.SUBSCRIBED,
        SyncEvent.APPLY_FAILED: SyncState.SUBSCRIBED,
    },
}


class SyncProtocolError(Exception):
    """An event the session's current state does not allow; the session is left as it was."""


class Outcome(enum.Enum):
    APPLY = "apply"
    ALREADY_HELD = "already-held"
    REFUSED = "refused"  # older than the held version
    INVALID = "invalid"  # failed validation


@dataclass(frozen=True, slots=True)
class HeldTable:
    version: int
    content_hash: str
    cluster_id: int = 0  # 0: unknown (the bootstrap table, or one persisted before tables carried it)

    @classmethod
    def of(cls, table: routing_pb2.RoutingTable) -> HeldTable:
        return cls(table.version, table.content_hash, table.cluster_id)


class Relation(enum.Enum):
    """How a received table stands to the held one. Versions are etcd revisions: they order tables of one etcd
    cluster only."""

    NEWER = "newer"  # a higher version of the same cluster
    SAME = "same"  # the held table again
    CONFLICTING = "conflicting"  # the held version with other content
    OLDER = "older"  # a lower version of the same cluster
    FIRST_CLUSTER = "first-cluster"  # the held table names no cluster: the first that does is taken
    OTHER_CLUSTER = "other-cluster"  # another etcd cluster (rebuilt, or another one): its versions start anew
    BEYOND_CLUSTER = "beyond-cluster"  # lower, but the newest the cluster holds: the held one never came from it


def relation(held: HeldTable, table: routing_pb2.RoutingTable, newest_in_cluster: bool) -> Relation:
    """`newest_in_cluster`: the replica read `table` from etcd just now as the region's newest (its word)."""
    # A table without a cluster (from a control plane that predates it) is judged by its version alone.
    if table.cluster_id and table.cluster_id != held.cluster_id:
        return Relation.FIRST_CLUSTER if held.cluster_id == 0 else Relation.OTHER_CLUSTER
    if table.version > held.version:
        return Relation.NEWER
    if table.version == held.version:
        return Relation.SAME if table.content_hash == held.content_hash else Relation.CONFLICTING
    return Relation.BEYOND_CLUSTER if newest_in_cluster and table.cluster_id else Relation.OLDER


@dataclass(frozen=True, slots=True)
class Rule:
    outcome: Outcome  # APPLY still goes through the region check and the validator first
    resync: str = ""  # the event logged when a table replaces one it does not follow


# Every relation's rule; docs/distribution.md has this table. The three that take a table not newer than the
# one held are how a router recovers without an operator from a rebuilt or restored etcd, and from a table
# with a huge version that some other server streamed.
RULES: dict[Relation, Rule] = {
    Relation.NEWER: Rule(Outcome.APPLY),
    Relation.FIRST_CLUSTER: Rule(Outcome.APPLY),
    Relation.OTHER_CLUSTER: Rule(Outcome.APPLY, resync="table_cluster_changed"),
    Relation.BEYOND_CLUSTER: Rule(Outcome.APPLY, resync="table_history_rewound"),
    Relation.SAME: Rule(Outcome.ALREADY_HELD),
    Relation.CONFLICTING: Rule(Outcome.REFUSED),
    Relation.OLDER: Rule(Outcome.REFUSED),
}


@dataclass(frozen=True, slots=True)
class RouterIdentity:
    router_id: str
    region: str
    url: str


@dataclass(frozen=True, slots=True)
class TableVerdict:
    """What to do with a received table: APPLY it (then report applied/apply_failed), or send `reply` now."""

    outcome: Outcome
    version: int
    reply: distribution_pb2.SubscribeRequest | None
    reason: str = ""
    relation: Relation = Relation.NEWER


def _ack(version: int) -> distribution_pb2.SubscribeRequest:
    return distribution_pb2.SubscribeRequest(ack=distribution_pb2.Ack(version=version))


def _nack(version: int, reason: str) -> distribution_pb2.SubscribeRequest:
    return distribution_pb2.SubscribeRequest(nack=distribution_pb2.Nack(version=version, reason=reason))


class TableSyncSession:
    """One router's view of the exchange; survives reconnects so the hello always carries what is held."""

    def __init__(self, identity: RouterIdentity, held: HeldTable, validate: Validate) -> None:
        self.identity = identity
        self.state = SyncState.DISCONNECTED
        self.held = held
        self.last_nack: NackRecord | None = None
        self._validate = validate
        self._applying: HeldTable | None = None

    def connect(self) -> distribution_pb2.SubscribeRequest:
        self._transition(SyncEvent.CONNECT)
        hello = distribution_pb2.RouterHello(
            router_id=self.identity.router_id,
            region=self.identity.region,
            version_held=self.held.version,
            url=self.identity.url,
            cluster_id_held=self.held.cluster_id,
        )
        return distribution_pb2.SubscribeRequest(hello=hello)

    def receive(self, table: routing_pb2.RoutingTable, *, newest_in_cluster: bool = False) -> TableVerdict:
        # Checked before judging so that an illegal table never reaches the validator.
        self._require(SyncEvent.TABLE_ACCEPTED, SyncEvent.TABLE_ANSWERED)
        verdict = self._judge(table, relation(self.held, table, newest_in_cluster))
        if verdict.outcome is Outcome.APPLY:
            self._transition(SyncEvent.TABLE_ACCEPTED)
            self._applying = HeldTable.of(table)
        else:
            self._transition(SyncEvent.TABLE_ANSWERED)
            if verdict.outcome is not Outcome.ALREADY_HELD:
                self.last_nack = NackRecord(verdict.version, verdict.reason)
        return verdict

    def applied(self) -> distribution_pb2.SubscribeRequest:
        self._transition(SyncEvent.APPLIED)
        assert self._applying is not None
        self.held, self._applying = self._applying, None
        return _ack(self.held.version)

    def apply_failed(self, reason: str) -> distribution_pb2.SubscribeRequest:
        self._transition(SyncEvent.APPLY_FAILED)
        assert self._applying is not None
        version, self._applying = self._applying.version, None
        self.last_nack = NackRecord(version, reason)
        return _nack(version, reason)

    def disconnect(self) -> None:
        self._transition(SyncEvent.DISCONNECT)

    def _judge(self, table: routing_pb2.RoutingTable, related: Relation) -> TableVerdict:
        version, rule = table.version, RULES[related]
        if rule.outcome is Outcome.REFUSED:
            return self._refusal(Outcome.REFUSED, version, f"older than held version {self.held.version}", related)
        if rule.outcome is Outcome.ALREADY_HELD:
            return TableVerdict(Outcome.ALREADY_HELD, version, _ack(version), relation=related)
        if table.region != self.identity.region:
            reason = f"table is for region {table.region!r}, this router serves {self.identity.region!r}"
            return self._refusal(Outcome.INVALID, version, reason, related)
        try:
            self._validate(table)
        except ValueError as error:
            return self._refusal(Outcome.INVALID, version, str(error) or type(error).__name__, related)
        except Exception as error:  # a validator bug must cost one NACK, not the subscription
            reason = f"validator failed: {type(error).__name__}: {error}"
            return self._refusal(Outcome.INVALID, version, reason, related)
        return TableVerdict(Outcome.APPLY, version, None, relation=related)

    @staticmethod
    def _refusal(outcome: Outcome, version: int, reason: str, related: Relation) -> TableVerdict:
        return TableVerdict(outcome, version, _nack(version, reason), reason, related)

    def _require(self, *events: SyncEvent) -> None:
        allowed = TRANSITIONS[self.state]
        for event in events:
            if event not in allowed:
                raise SyncProtocolError(f"event {event.value} is not allowed in state {self.state.value}")

    def _transition(self, event: SyncEvent) -> None:
        self._require(event)
        self.state = TRANSITIONS[self.state][event]
