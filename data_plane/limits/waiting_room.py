"""Per-model waiting rooms: a request that finds every deployment at capacity (or at its rate limit) waits
here for a freed slot instead of failing, in `PriorityFifo` order, until the queue timeout or its own
deadline. A released slot wakes the head; a woken request decides again and, if it still finds no slot,
goes back to its old place. A full queue, a timeout or a deadline is a 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from data_plane.errors import ClientError
from data_plane.limits.admission_queue import PriorityFifo
from meridian_common.histogram import Histogram

QUEUED = "queued"
WOKEN = "woken"
DONE = "done"

# A room blocked by rate limits gets no release to wake it: its head re-decides this often instead.
POLL_S = 0.25


@dataclass(eq=False, slots=True)
class Ticket:
    priority: int
    joined_at: float
    seq: int = -1
    state: str = QUEUED
    future: asyncio.Future[None] | None = None


class QueueRejected(ClientError):
    """503 with Retry-After: the queue is full, or the wait passed its timeout or the client's deadline."""

    def __init__(self, message: str, code: str, retry_after_s: float, headers: dict[str, str]) -> None:
        super().__init__(503, message, code=code,
                         headers={**headers, "Retry-After": str(max(1, math.ceil(retry_after_s)))})


@dataclass(slots=True)
class WaitingRoom:
    model: str
    size: int
    timeout_s: float
    on_depth: Callable[[str, int], None] = lambda model, depth: None
    on_wait: Callable[[str, float], None] = lambda model, wait_s: None
    _order: PriorityFifo[Ticket] = field(init=False)
    _woken: int = 0
    _timer: asyncio.TimerHandle | None = None
    waits_ms: Histogram = field(default_factory=Histogram)  # since the last telemetry drain

    def __post_init__(self) -> None:
        self._order = PriorityFifo(max(0, self.size))

    @property
    def depth(self) -> int:
        return len(self._order)

    def resize(self, size: int, timeout_s: float) -> None:
        self.size, self.timeout_s = size, timeout_s
        self._order.max_size = max(0, size)

    def busy(self) -> bool:
        """Someone is waiting or about to decide again: a newcomer must queue behind them."""
        return len(self._order) > 0 or self._woken > 0

    def join(self, priority: int, now: float, headers: dict[str, str]) -> Ticket:
        ticket = Ticket(priority, now)
        seq = self._order.push(ticket, priority)
        if seq is None:
            raise QueueRejected(f"every deployment of model {self.model!r} is busy and its queue is full "
                                f"({self.size} waiting)", "queue_full", 1, headers)
        ticket.seq = seq
        self.on_depth(self.model, self.depth)
        self._arm_timer()
        return ticket

    async def wait(self, ticket: Ticket, deadline: float, headers: dict[str, str]) -> None:
        """Returns once woken; raises QueueRejected at the deadline (the ticket has then left)."""
        loop = asyncio.get_running_loop()
        ticket.future = loop.create_future()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await asyncio.wait({ticket.future}, timeout=remaining)
        if ticket.state == WOKEN:
            return
        waited_s = time.monotonic() - ticket.joined_at
        self.leave(ticket)
        raise QueueRejected(f"every deployment of model {self.model!r} stayed busy for the {waited_s:.1f} s this "
                            "request could wait", "queue_timeout", 1, headers)

    def requeue(self, ticket: Ticket) -> None:
        """A woken ticket found no slot after all: back to its old place."""
        if ticket.state != WOKEN:
            return
        self._woken -= 1
        ticket.state = QUEUED
        self._order.push_back(ticket, ticket.priority, ticket.seq)
        self.on_depth(self.model, self.depth)
        self._arm_timer()

    def admitted(self, ticket: Ticket) -> None:
        """The ticket's request took a slot: it stops holding newcomers back."""
        if ticket.state == WOKEN:
            self._woken -= 1
        elif ticket.state == QUEUED:
            self._order.remove(ticket)
            self.on_depth(self.model, self.depth)
        if ticket.state != DONE:
            ticket.state = DONE
            self._record_wait(time.monotonic() - ticket.joined_at)

    def leave(self, ticket: Ticket) -> None:
        """The request is gone (timeout, error, client disconnect) without taking a slot."""
        if ticket.state == QUEUED:
            self._order.remove(ticket)
            self.on_depth(self.model, self.depth)
            self._record_wait(time.monotonic() - ticket.joined_at)
        elif ticket.state == WOKEN:
            self._woken -= 1
            self.notify()  # the wake it received was for a slot that is still free
        ticket.state = DONE

    def notify(self) -> None:
        """A slot may have freed: wake the head."""
        ticket = self._order.pop()
        if ticket is None:
            return
        self.on_depth(self.model, self.depth)
        ticket.state = WOKEN
        self._woken += 1
        if ticket.future is not None and not ticket.future.done():
            ticket.future.set_result(None)

    def notify_all(self) -> None:
        for _ in range(len(self._order)):
            self.notify()

    def _record_wait(self, wait_s: float) -> None:
        self.waits_ms.record(wait_s * 1000)
        self.on_wait(self.model, wait_s)

    def _arm_timer(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(POLL_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._order and self._woken == 0:
            self.notify()
        if self._order:
            self._arm_timer()

    def drain_wait_p95_ms(self) -> float:
        waits, self.waits_ms = self.waits_ms, Histogram()
        return waits.quantile(0.95) if waits.count else 0.0


@dataclass(slots=True)
class WaitingRooms:
    on_depth: Callable[[str, int], None] = lambda model, depth: None
    on_wait: Callable[[str, float], None] = lambda model, wait_s: None
    rooms: dict[str, WaitingRoom] = field(default_factory=dict)

    def apply(self, models: Iterable[tuple[str, int, float]]) -> None:
        """(model, queue size, queue timeout) of a new table: rooms are kept, resized, or closed (their
        waiters are woken to decide again, against the new table)."""
        wanted = {name: (size, timeout_s) for name, size, timeout_s in models}
        for name, room in list(self.rooms.items()):
            if name not in wanted:
                room.notify_all()
                del self.rooms[name]
        for name, (size, timeout_s) in wanted.items():
            room = self.rooms.get(name)
            if room is None:
                self.rooms[name] = WaitingRoom(name, size, timeout_s, self.on_depth, self.on_wait)
            else:
                room.resize(size, timeout_s)
        for room in self.rooms.values():
            room.notify_all()

    def get(self, model: str) -> WaitingRoom | None:
        return self.rooms.get(model)

    def notify(self, model: str) -> None:
        room = self.rooms.get(model)
        if room is not None:
            room.notify()

    def depths(self) -> dict[str, int]:
        return {name: room.depth for name, room in self.rooms.items()}
