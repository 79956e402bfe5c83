"""A server's admission: a request runs when one of `capacity` slots is free and the KV cache has room for
what it reserves; the rest wait in arrival order (the first that does not fit holds back those behind it, as
a first-come-first-served scheduler does), and a request cancelled while waiting, or just as it was admitted,
never keeps a slot or KV space."""

from __future__ import annotations

import asyncio
from collections import deque


class _Waiter:
    __slots__ = ("future", "kv_tokens")

    def __init__(self, future: asyncio.Future[None], kv_tokens: int) -> None:
        self.future = future
        self.kv_tokens = kv_tokens


class AdmissionQueue:
    __slots__ = ("_capacity", "_kv_budget", "_waiters", "kv_reserved", "peak_running", "running")

    def __init__(self, capacity: int, kv_budget_tokens: int | None = None) -> None:
        """`kv_budget_tokens` None: no KV limit, slots alone decide."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        _check_budget(kv_budget_tokens)
        self._capacity = capacity
        self._kv_budget = kv_budget_tokens
        self._waiters: deque[_Waiter] = deque()
        self.running = 0
        self.peak_running = 0
        self.kv_reserved = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def kv_budget_tokens(self) -> int | None:
        return self._kv_budget

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot or for KV space (one queue holds both)."""
        return len(self._waiters)

    def try_acquire(self, kv_tokens: int = 0) -> bool:
        """Admits at once if a slot is free, the KV space fits and nobody is ahead in the queue."""
        if self._waiters or not self._fits(kv_tokens):
            return False
        self._admit(kv_tokens)
        return True

    async def acquire(self, kv_tokens: int = 0) -> None:
        """Waits for a slot and `kv_tokens` of KV space; release with the same `kv_tokens`."""
        if kv_tokens < 0:
            raise ValueError(f"kv_tokens must be 0 or more, got {kv_tokens}")
        if self.try_acquire(kv_tokens):
            return
        waiter = _Waiter(asyncio.get_running_loop().create_future(), kv_tokens)
        self._waiters.append(waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                # Admitted in the same loop iteration as the cancellation: the slot is ours to hand on.
                self.release(kv_tokens)
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                # It may have been the head that did not fit: those behind it may fit now.
                self._admit_waiters()
            raise

    def release(self, kv_tokens: int = 0) -> None:
        if self.running <= 0:
            raise RuntimeError("release() without a matching acquire()")
        if not 0 <= kv_tokens <= self.kv_reserved:
            raise RuntimeError(f"release() of {kv_tokens} KV tokens with {self.kv_reserved} reserved")
        self.running -= 1
        self.kv_reserved -= kv_tokens
        self._admit_waiters()

    def set_capacity(self, capacity: int) -> None:
        """Takes effect for the next admission; requests already running beyond a lowered capacity finish."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._admit_waiters()

    def set_kv_budget(self, kv_budget_tokens: int | None) -> None:
        """Takes effect for the next admission; requests holding more than a lowered budget finish."""
        _check_budget(kv_budget_tokens)
        self._kv_budget = kv_budget_tokens
        self._admit_waiters()

    def _fits(self, kv_tokens: int) -> bool:
        if self.running >= self._capacity:
            return False
        budget = self._kv_budget
        # A request larger than the whole budget is admitted alone, once nobody else holds KV space, rather
        # than waiting for ever (a lowered budget must not strand the requests already queued).
        return budget is None or self.kv_reserved == 0 or self.kv_reserved + kv_tokens <= budget

    def _admit(self, kv_tokens: int) -> None:
        self.running += 1
        self.kv_reserved += kv_tokens
        if self.running > self.peak_running:
            self.peak_running = self.running

    def _admit_waiters(self) -> None:
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if head.future.done():  # cancelled, its task not yet resumed to remove it
                waiters.popleft()
                continue
            if not self._fits(head.kv_tokens):
                return
            waiters.popleft()
            self._admit(head.kv_tokens)
            head.future.set_result(None)


def _check_budget(kv_budget_tokens: int | None) -> None:
    if kv_budget_tokens is not None and kv_budget_tokens < 1:
        raise ValueError(f"kv_budget_tokens must be at least 1, got {kv_budget_tokens}")
