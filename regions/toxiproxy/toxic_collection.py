"""One proxy's toxics, in the order they were added, and the signal live links use to pick up changes.

Every toxic gets a uid when it is created and a new revision when it is updated: a link keeps its
per-connection state (toxicity draw, limit_data's byte count...) by uid and redraws on a new revision.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from regions.toxiproxy import api_json
from regions.toxiproxy.api_error import TOXIC_NOT_FOUND
from regions.toxiproxy.api_json import ToxicSpec

_uids = itertools.count(1)


@dataclasses.dataclass(frozen=True, slots=True)
class ToxicEntry:
    uid: int
    revision: int
    spec: ToxicSpec


class ToxicCollection:
    def __init__(self) -> None:
        self._entries: list[ToxicEntry] = []
        self._listeners: set[Callable[[], None]] = set()

    def specs(self) -> list[ToxicSpec]:
        return [entry.spec for entry in self._entries]

    def entries(self, direction: str) -> list[ToxicEntry]:
        return [entry for entry in self._entries if entry.spec.direction == direction]

    def is_current(self, uid: int, revision: int) -> bool:
        return any(entry.uid == uid and entry.revision == revision for entry in self._entries)

    def get(self, name: str) -> ToxicSpec:
        return self._find(name).spec

    def add_json(self, doc: Any) -> ToxicSpec:
        spec = api_json.parse_toxic_create(doc, {entry.spec.name for entry in self._entries})
        self._entries.append(ToxicEntry(uid=next(_uids), revision=0, spec=spec))
        self._changed()
        return spec

    def update_json(self, name: str, doc: Any) -> ToxicSpec:
        entry = self._find(name)
        spec = api_json.parse_toxic_update(doc, entry.spec)
        index = self._entries.index(entry)
        self._entries[index] = ToxicEntry(uid=entry.uid, revision=entry.revision + 1, spec=spec)
        self._changed()
        return spec

    def remove(self, name: str) -> None:
        self._entries.remove(self._find(name))
        self._changed()

    def reset(self) -> None:
        if self._entries:
            self._entries.clear()
            self._changed()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """`listener` is called after every change; returns the function that unsubscribes it."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def _find(self, name: str) -> ToxicEntry:
        for entry in self._entries:
            if entry.spec.name == name:
                return entry
        raise TOXIC_NOT_FOUND

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()
