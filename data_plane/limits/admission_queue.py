"""The order in which waiting requests get a freed slot: a bounded queue of priority classes, first in first
out within a class. Pure ordering, no asyncio: `waiting_room.py` wraps it with futures and deadlines."""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

QUEUE_PRIORITIES = ("high", "normal", "low")  # x-meridian-queue-priority; a lower index leaves first
DEFAULT_QUEUE_PRIORITY = "normal"


@dataclass(slots=True)
class PriorityFifo(Generic[T]):
    max_size: int
    _classes: dict[int, list[tuple[int, int, T]]] = field(default_factory=dict)
    _next_seq: int = 0
    _size: int = 0

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, priority: int) -> int | None:
        """Appends `item` to its class; returns its sequence number, or None when the queue is full."""
        if self._size >= self.max_size:
            return None
        seq = self._next_seq
        self._next_seq += 1
        self._classes.setdefault(priority, []).append((seq, id(item), item))
        self._size += 1
        return seq

    def push_back(self, item: T, priority: int, seq: int) -> None:
        """Puts an item that had left (woken, then found no slot) back at its original place; it had a
        place already, so this never fails for fullness."""
        insort(self._classes.setdefault(priority, []), (seq, id(item), item), key=lambda entry: entry[0])
        self._size += 1

    def pop(self) -> T | None:
        for priority in sorted(self._classes):
            entries = self._classes[priority]
            if entries:
                self._size -= 1
                return entries.pop(0)[2]
        return None

    def remove(self, item: T) -> bool:
        for entries in self._classes.values():
            for index, entry in enumerate(entries):
                if entry[2] is item:
                    del entries[index]
                    self._size -= 1
                    return True
        return False

    def items(self) -> list[T]:
        """Every waiting item, in the order they would leave."""
        return [entry[2] for priority in sorted(self._classes) for entry in self._classes[priority]]
