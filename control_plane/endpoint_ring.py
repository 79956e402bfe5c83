"""Which etcd endpoint a replica talks to, as a pure value: the current one, and the next one once a call
through the current client failed for want of its member. Concurrent failures of one client move the ring
once, not once each, because each failure names the generation of the client it came from. The ring also
counts the moves since a call last succeeded, so that a whole cluster out of reach is said once, not once per
move."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class EndpointRing:
    endpoints: tuple[str, ...]
    index: int = 0
    generation: int = 0
    """Counts the moves; the client made for an endpoint carries the generation it was made in."""
    moves_since_success: int = 0

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("an endpoint ring needs at least one endpoint")
        if not 0 <= self.index < len(self.endpoints):
            raise ValueError(f"index {self.index} is outside the {len(self.endpoints)} endpoints")

    @property
    def current(self) -> str:
        return self.endpoints[self.index]

    @property
    def all_failed(self) -> bool:
        """Every endpoint failed since a call last succeeded: the cluster is out of reach, not one member."""
        return self.moves_since_success >= len(self.endpoints)

    def after_failure(self, generation: int) -> EndpointRing:
        """The ring once the client of `generation` failed: the next endpoint in order, or unchanged when a
        failure of that client already moved it, or when there is no other endpoint to move to."""
        if generation != self.generation or len(self.endpoints) == 1:
            return self
        return EndpointRing(self.endpoints, (self.index + 1) % len(self.endpoints), self.generation + 1,
                            self.moves_since_success + 1)

    def after_success(self, generation: int) -> EndpointRing:
        """The ring once a call through the client of `generation` succeeded (an older client's says nothing
        about the current endpoint)."""
        if generation != self.generation or not self.moves_since_success:
            return self
        return replace(self, moves_since_success=0)
