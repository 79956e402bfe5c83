"""Lets one log line of a kind through per interval and counts the rest, so that a fault every request hits
logs a traceback now and then, with the number of lines it stands for, instead of one per request.

Pure: the caller passes `now` (monotonic seconds).
"""

from __future__ import annotations


class LogThrottle:
    __slots__ = ("interval_s", "_last_logged", "_held_back")

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError(f"a log throttle's interval must not be negative, got {interval_s} s")
        self.interval_s = interval_s
        self._last_logged: dict[str, float] = {}
        self._held_back: dict[str, int] = {}

    def admit(self, kind: str, now: float) -> int | None:
        """None when this line of `kind` stays out of the log (it is counted); otherwise the number of lines of
        `kind` held back since the last one logged."""
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held_back[kind] = self._held_back.get(kind, 0) + 1
            return None
        self._last_logged[kind] = now
        return self._held_back.pop(kind, 0)
