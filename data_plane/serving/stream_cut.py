"""Why a stream that had started reaching its client counts as cut by its backend: the one vocabulary the relay,
the resume logic, the log and the metrics share."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CutReason(StrEnum):
    CLOSED = "closed"  # the connection closed or was reset before `data: [DONE]`
    STALLED = "stalled"  # no byte for longer than the stall timeout
    MALFORMED = "malformed_event"  # an event whose data is neither JSON nor [DONE]
    ERROR_EVENT = "error_event"  # the backend sent an error event mid-stream


@dataclass(frozen=True, slots=True)
class Cut:
    reason: CutReason
    detail: str  # for the log: the exception's name and words, or what the event held
