"""The control plane's side of one router's subscription as a pure state machine: what to send, and when.

No I/O (h11's shape): the gRPC servicer feeds it the router's messages and the cache's tables, and sends
what it returns. One table at most is in flight; newer tables arriving meanwhile coalesce into the newest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meridian_common.table_distribution import NackRecord
from meridian_proto import distribution_pb2, routing_pb2


class SessionState(enum.Enum):
    AWAITING_HELLO = "awaiting-hello"
    IDLE = "idle"  # the router has answered everything sent
    IN_FLIGHT = "in-flight"  # a table was sent; its ACK/NACK is awaited
    CLOSED = "closed"


class SessionEvent(enum.Enum):
    HELLO = "hello"
    SEND = "send"  # a newer table, nothing in flight: send it
    SKIP = "skip"  # a table the router holds or refused already: nothing to do
    COALESCE = "coalesce"  # a table while another is in flight: keep only the newest
    ACK = "ack"
    NACK = "nack"
    CLOSE = "close"


# Every legal transition; anything absent raises SessionProtocolError and changes nothing.
TRANSITIONS: dict[SessionState, dict[SessionEvent, SessionState]] = {
    SessionState.AWAITING_HELLO: {
        SessionEvent.HELLO: SessionState.IDLE,
        SessionEvent.CLOSE: SessionState.CLOSED,
    },
    SessionState.IDLE: {
        SessionEvent.SEND: SessionState.IN_FLIGHT,
        SessionEvent.SKIP: SessionState.IDLE,
        SessionEvent.CLOSE: SessionState.CLOSED,
    },
    SessionState.IN_FLIGHT: {
        SessionEvent.COALESCE: SessionState.IN_FLIGHT,
        SessionEvent.ACK: SessionState.IDLE,
        SessionEvent.NACK: SessionState.IDLE,
        SessionEvent.CLOSE: SessionState.CLOSED,
    },
    SessionState.CLOSED: {},
}


class SessionProtocolError(Exception):
    """A message or table the session's current state does not allow; the session is left as it was."""


@dataclass(frozen=True, slots=True)
class RouterRecord:
    """What the control plane knows of one subscribed router (times are the caller's clock, seconds)."""

    router_id: str
    region: str
    url: str
    replica_id: str
    acked_version: int
    acked_at: float
    in_flight_version: int | None
    last_nack: NackRecord | None


class DistributionSession:
    """One router's stream, seen from the control plane."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.state = SessionState.AWAITING_HELLO
        self.hello: distribution_pb2.RouterHello | None = None
        # The router's hello counts as an acknowledgement of the version it says it holds, and of its cluster:
        # versions compare only within one etcd cluster.
        self.acked_version = 0
        self.acked_cluster_id = 0
        self.acked_at = 0.0
        self.last_nack: NackRecord | None = None
        self.in_flight: routing_pb2.RoutingTable | None = None
        self.pending: routing_pb2.RoutingTable | None = None
        self._refused: tuple[int, int] | None = None  # (cluster_id, version) of the last table NACKed
        self._checked_version: int | None = None  # the acked version etcd was last asked about

    @property
    def region(self) -> str:
        if self.hello is None:
            raise SessionProtocolError("no hello yet: the router's region is unknown")
        return self.hello.region

    def receive(
        self, request: distribution_pb2.SubscribeRequest, now: float
    ) -> distribution_pb2.SubscribeResponse | None:
        """Handles one message from the router; returns the table to send next, if any."""
        kind = request.WhichOneof("kind")
        if kind == "hello":
            self.receive_hello(request.hello, now)
            return None
        if kind == "ack":
            return self.receive_ack(request.ack.version, now)
        if kind == "nack":
            return self.receive_nack(request.nack.version, request.nack.reason, now)
        raise SessionProtocolError("empty SubscribeRequest: expected hello, ack or nack")

    def receive_hello(self, hello: distribution_pb2.RouterHello, now: float) -> None:
        self._require(SessionEvent.HELLO)
        if not hello.router_id or not hello.region:
            raise SessionProtocolError("hello must name router_id and region")
        self._transition(SessionEvent.HELLO)
        self.hello = hello
        self.acked_version, self.acked_cluster_id, self.acked_at = hello.version_held, hello.cluster_id_held, now

    def offer(self, table: routing_pb2.RoutingTable) -> distribution_pb2.SubscribeResponse | None:
        """The current table of the router's region changed; returns it if it is to be sent now."""
        if self.state is SessionState.IN_FLIGHT:
            self._require_region(table)
            self._transition(SessionEvent.COALESCE)
            newest = self.pending if self.pending is not None else self.in_flight
            if newest is None or table.version > newest.version:
                self.pending = table
            return None
        event = SessionEvent.SEND if self.hello is not None and self._worth_sending(table) else SessionEvent.SKIP
        self._require(event)
        self._require_region(table)
        self._transition(event)
        return self._send(table) if event is SessionEvent.SEND else None

    def needs_check(self, table: routing_pb2.RoutingTable) -> bool:
        """Whether only etcd can say what to do with `table`: the router holds a higher version of the same
        cluster than the one offered, because this replica lags (the router got it from another) or because the
        router's table never came from this cluster (etcd restored from a backup, a table from elsewhere). The
        caller then reads the region's table from etcd and hands it to `offer_newest`; asked once per version
        the router holds."""
        return (self.state is SessionState.IDLE and self.hello is not None and table.cluster_id != 0
                and table.cluster_id == self.acked_cluster_id and table.version < self.acked_version
                and self._checked_version != self.acked_version)

    def offer_newest(self, table: routing_pb2.RoutingTable) -> distribution_pb2.SubscribeResponse | None:
        """The region's table as etcd holds it now, read after `needs_check`. If the router holds a higher version
        of its cluster, the cluster never wrote that version: the table goes out marked `newest_in_cluster`, and
        the router gives way to it."""
        self._checked_version = self.acked_version
        if table.cluster_id != self.acked_cluster_id or table.version >= self.acked_version or self._was_refused(table):
            return self.offer(table)
        self._require(SessionEvent.SEND)
        self._require_region(table)
        self._transition(SessionEvent.SEND)
        response = self._send(table)
        response.newest_in_cluster = True
        return response

    def receive_ack(self, version: int, now: float) -> distribution_pb2.SubscribeResponse | None:
        self._answering(SessionEvent.ACK, version)
        self._transition(SessionEvent.ACK)
        assert self.in_flight is not None
        self.acked_version, self.acked_cluster_id, self.acked_at = version, self.in_flight.cluster_id, now
        self.in_flight = None
        return self._send_pending()

    def receive_nack(
        self, version: int, reason: str, now: float
    ) -> distribution_pb2.SubscribeResponse | None:
        self._answering(SessionEvent.NACK, version)
        self._transition(SessionEvent.NACK)
        assert self.in_flight is not None
        self._refused = (self.in_flight.cluster_id, version)
        self.last_nack, self.in_flight = NackRecord(version, reason, now), None
        return self._send_pending()

    def close(self) -> None:
        self._transition(SessionEvent.CLOSE)
        self.pending = None

    def record(self) -> RouterRecord:
        if self.hello is None:
            raise SessionProtocolError("no hello yet: nothing to record")
        return RouterRecord(
            router_id=self.hello.router_id,
            region=self.hello.region,
            url=self.hello.url,
            replica_id=self.replica_id,
            acked_version=self.acked_version,
            acked_at=self.acked_at,
            in_flight_version=self.in_flight.version if self.in_flight is not None else None,
            last_nack=self.last_nack,
        )

    def _worth_sending(self, table: routing_pb2.RoutingTable) -> bool:
        if self._was_refused(table):
            return False
        # A table of another cluster than the router's (or the first with one) is a new start for it.
        if table.cluster_id and table.cluster_id != self.acked_cluster_id:
            return True
        return table.version > self.acked_version

    def _was_refused(self, table: routing_pb2.RoutingTable) -> bool:
        # A NACKed version is not offered again: only a newer one (or another cluster's) can fix what the router
        # refused.
        return self._refused is not None and self._refused[0] == table.cluster_id and table.version <= self._refused[1]

    def _send(self, table: routing_pb2.RoutingTable) -> distribution_pb2.SubscribeResponse:
        self.in_flight = table
        return distribution_pb2.SubscribeResponse(table=table, replica_id=self.replica_id)

    def _send_pending(self) -> distribution_pb2.SubscribeResponse | None:
        table, self.pending = self.pending, None
        if table is None:
            return None
        return self.offer(table)

    def _answering(self, event: SessionEvent, version: int) -> None:
        self._require(event)
        assert self.in_flight is not None
        if version != self.in_flight.version:
            raise SessionProtocolError(
                f"{event.value} for version {version}, but version {self.in_flight.version} is in flight"
            )

    def _require_region(self, table: routing_pb2.RoutingTable) -> None:
        if self.hello is not None and table.region != self.hello.region:
            raise SessionProtocolError(
                f"table of region {table.region!r} offered to a router of region {self.hello.region!r}"
            )

    def _require(self, event: SessionEvent) -> None:
        if event not in TRANSITIONS[self.state]:
            raise SessionProtocolError(f"event {event.value} is not allowed in state {self.state.value}")

    def _transition(self, event: SessionEvent) -> None:
        self._require(event)
        self.state = TRANSITIONS[self.state][event]
