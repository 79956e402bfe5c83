"""What both ends of table distribution agree on besides the proto messages: the gRPC metadata key naming the
replica that serves a stream, and the record of a refused table."""

from __future__ import annotations

from dataclasses import dataclass

REPLICA_METADATA_KEY = "meridian-replica-id"
"""Initial metadata of a Subscribe stream: the id of the replica serving it, so that a router can say which
replica it follows."""


@dataclass(frozen=True, slots=True)
class NackRecord:
    """A table version a router refused, and why. `at` is the recorder's clock in seconds: the control plane
    keeps it to show the refusal's age; a router's sync session, which reads no clock, leaves it None."""

    version: int
    reason: str
    at: float | None = None
