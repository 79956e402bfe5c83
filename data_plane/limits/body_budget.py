"""The bytes of request bodies a router holds at once: each body takes its share before it is read (all of its
Content-Length, or chunk by chunk when it has none) and gives it back when its request is done.

Pure: no I/O and no clock; a share that cannot be taken changes nothing.
"""

from __future__ import annotations


class BodyBudget:
    __slots__ = ("capacity_bytes", "held_bytes")

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"a body budget needs a positive capacity, got {capacity_bytes} bytes")
        self.capacity_bytes = capacity_bytes
        self.held_bytes = 0

    def share(self) -> BodyShare:
        """An empty share for one request's body."""
        return BodyShare(self)


class BodyShare:
    """One body's part of the budget; it only grows until it is released, once."""

    __slots__ = ("_budget", "held_bytes", "released")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held_bytes = 0
        self.released = False

    def grow_to(self, total_bytes: int) -> bool:
        """Holds `total_bytes` in all when the budget has room for the difference; otherwise changes nothing."""
        if self.released:
            raise ValueError("a released body share cannot grow")
        more = total_bytes - self.held_bytes
        if more <= 0:
            return True
        budget = self._budget
        if budget.held_bytes + more > budget.capacity_bytes:
            return False
        budget.held_bytes += more
        self.held_bytes = total_bytes
        return True

    def release(self) -> None:
        """Gives every byte back; releasing again does nothing."""
        if not self.released:
            self._budget.held_bytes -= self.held_bytes
            self.held_bytes = 0
            self.released = True
