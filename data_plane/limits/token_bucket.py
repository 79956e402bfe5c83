"""A token bucket with continuous refill: the unit of every rate limit (requests or tokens per minute).

Pure: every method takes `now` (monotonic seconds) from the caller. The level never goes below zero and
never above the capacity; a charge that turns out too small is settled later, as far as the level allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    capacity: float
    refill_per_s: float  # 0: only grants (from the region's shared bucket) fill it
    level: float
    updated_at: float

    @classmethod
    def full(cls, capacity: float, refill_per_s: float, now: float) -> TokenBucket:
        return cls(max(0.0, capacity), max(0.0, refill_per_s), max(0.0, capacity), now)

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated_at
        if elapsed > 0:
            self.level = min(self.capacity, self.level + elapsed * self.refill_per_s)
            self.updated_at = now

    def remaining(self, now: float) -> float:
        self._refill(now)
        return self.level

    def try_take(self, n: float, now: float) -> bool:
        """Takes `n` when the bucket holds them; otherwise changes nothing."""
        self._refill(now)
        if n <= self.level:
            self.level -= max(0.0, n)
            return True
        return False

    def add(self, n: float, now: float) -> None:
        """Puts tokens back (a refund, a grant): never above capacity, never below zero."""
        self._refill(now)
        self.level = min(self.capacity, max(0.0, self.level + n))

    def settle(self, estimated: float, actual: float, now: float) -> float:
        """Charges the difference between the real usage and the estimate taken up front (or refunds it).
        Returns what was actually moved: a shortfall the level cannot cover is forgiven, not owed."""
        before = self.remaining(now)
        self.add(estimated - actual, now)
        return before - self.level

    def retry_after_s(self, n: float, now: float, refill_per_s: float | None = None) -> float:
        """Seconds until `n` tokens are there at `refill_per_s` (default: the bucket's own rate);
        infinite when more than the capacity is asked or nothing refills."""
        self._refill(now)
        missing = n - self.level
        if missing <= 0:
            return 0.0
        rate = self.refill_per_s if refill_per_s is None else refill_per_s
        if n > self.capacity or rate <= 0:
            return math.inf
        return missing / rate

    def reset_s(self, now: float, refill_per_s: float | None = None) -> float:
        """Seconds until the bucket is full again."""
        self._refill(now)
        rate = self.refill_per_s if refill_per_s is None else refill_per_s
        missing = self.capacity - self.level
        if missing <= 0:
            return 0.0
        return missing / rate if rate > 0 else math.inf

    def reconfigure(self, capacity: float, refill_per_s: float, now: float) -> None:
        """A new limit keeps what has been used: the same shortfall below the new capacity."""
        self._refill(now)
        used = self.capacity - self.level
        self.capacity = max(0.0, capacity)
        self.refill_per_s = max(0.0, refill_per_s)
        self.level = min(self.capacity, max(0.0, self.capacity - used))
