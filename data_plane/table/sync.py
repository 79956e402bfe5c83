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

    @classmethod
    def of(cls, table: routing_pb2.RoutingTable) -> HeldTable:
        return cls(table.version, table.content_hash)


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
        )
        return distribution_pb2.SubscribeRequest(hello=hello)

    def receive(self, table: routing_pb2.RoutingTable) -> TableVerdict:
        # Checked before judging so that an illegal table never reaches the validator.
        self._require(SyncEvent.TABLE_ACCEPTED, SyncEvent.TABLE_ANSWERED)
        verdict = self._judge(table)
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

    def _judge(self, table: routing_pb2.RoutingTable) -> TableVerdict:
        held, version = self.held, table.version
        if version < held.version or (version == held.version and table.content_hash != held.content_hash):
            return self._refusal(Outcome.REFUSED, version, f"older than held version {held.version}")
        if version == held.version:
            return TableVerdict(Outcome.ALREADY_HELD, version, _ack(version))
        if table.region != self.identity.region:
            reason = f"table is for region {table.region!r}, this router serves {self.identity.region!r}"
            return self._refusal(Outcome.INVALID, version, reason)
        try:
            self._validate(table)
        except ValueError as error:
            return self._refusal(Outcome.INVALID, version, str(error) or type(error).__name__)
        except Exception as error:  # a validator bug must cost one NACK, not the subscription
            reason = f"validator failed: {type(error).__name__}: {error}"
            return self._refusal(Outcome.INVALID, version, reason)
        return TableVerdict(Outcome.APPLY, version, None)

    @staticmethod
    def _refusal(outcome: Outcome, version: int, reason: str) -> TableVerdict:
        return TableVerdict(outcome, version, _nack(version, reason), reason)

    def _require(self, *events: SyncEvent) -> None:
        allowed = TRANSITIONS[self.state]
        for event in events:
            if event not in allowed:
                raise SyncProtocolError(f"event {event.value} is not allowed in state {self.state.value}")

    def _transition(self, event: SyncEvent) -> None:
        self._require(event)
        self.state = TRANSITIONS[self.state][event]
