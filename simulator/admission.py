"""A server's concurrency slots: at most `capacity` requests run, the rest wait in arrival order, and a
request cancelled while waiting, or just as it was admitted, never keeps a slot."""

from __future__ import annotations

import asyncio
from collections import deque


class AdmissionQueue:
    __slots__ = ("_capacity", "_waiters", "peak_running", "running")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.running = 0
        self.peak_running = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Takes a slot at once if one is free and nobody is ahead in the queue."""
        if self._waiters or self.running >= self._capacity:
            return False
        self._admit()
        return True

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Admitted in the same loop iteration as the cancellation: the slot is ours to hand on.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self.running <= 0:
            raise RuntimeError("release() without a matching acquire()")
        self.running -= 1
        self._admit_waiters()

    def set_capacity(self, capacity: int) -> None:
        """Takes effect for the next admission; requests already running beyond a lowered capacity finish."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._admit_waiters()

    def _admit(self) -> None:
        self.running += 1
        if self.running > self.peak_running:
            self.peak_running = self.running

    def _admit_waiters(self) -> None:
        while self._waiters and self.running < self._capacity:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled, its task not yet resumed to remove it
                continue
            self._admit()
            waiter.set_result(None)
