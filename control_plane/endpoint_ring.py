"""Which etcd endpoint a replica talks to, as a pure value: the current one, and the next one once a call
through the current client failed for want of its member. Concurrent failures of one client move the ring
once, not once each, because each failure names the generation of the client it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndpointRing:
    endpoints: tuple[str, ...]
    index: int = 0
    generation: int = 0
    """Counts the moves; the client made for an endpoint carries the generation it was made in."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("an endpoint ring needs at least one endpoint")
        if not 0 <= self.index < len(self.endpoints):
            raise ValueError(f"index {self.index} is outside the {len(self.endpoints)} endpoints")

    @property
    def current(self) -> str:
        return self.endpoints[self.index]

    def after_failure(self, generation: int) -> EndpointRing:
        """The ring once the client of `generation` failed: the next endpoint in order, or unchanged when a
        failure of that client already moved it, or when there is no other endpoint to move to."""
        if generation != self.generation or len(self.endpoints) == 1:
            return self
        return EndpointRing(self.endpoints, (self.index + 1) % len(self.endpoints), self.generation + 1)
