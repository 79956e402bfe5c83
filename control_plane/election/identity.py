"""The identity a candidate campaigns with, as the JSON value of the leader key. The election itself treats
that value as opaque bytes; only the replica that writes it and those that read it back know its fields."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CandidateIdentity:
    """What a leader key's value says about its holder, for followers and `meridian status`."""

    id: str
    pid: int
    admin_url: str
    grpc_url: str

    def encode(self) -> bytes:
        return json.dumps(
            {"id": self.id, "pid": self.pid, "admin_url": self.admin_url, "grpc_url": self.grpc_url},
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, value: bytes) -> CandidateIdentity:
        fields = json.loads(value)
        return cls(str(fields["id"]), int(fields["pid"]), str(fields["admin_url"]), str(fields["grpc_url"]))
