"""Frames a server-sent-events byte stream into whole events, and reads an event's data: the one place the
router parses SSE. Pure: fed bytes as they arrive, it returns the events they complete and keeps the rest.

An event ends at a blank line: `\\n\\n`, `\\r\\n\\r\\n` or a mix of the two (a line ending then an empty line).
Bare `\\r` line endings, which the SSE spec allows but no LLM server sends, are not recognised.
"""

from __future__ import annotations

import re

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_LONGEST_END = 4  # bytes of the longest separator; a split one may start this far before the buffer's end


class SseFramer:
    """Fed each chunk of a stream as it arrives; `feed` returns the events the chunk completed, each with the
    blank line that ends it, and `tail` what is left at the end of the stream."""

    __slots__ = ("_buffer", "_scanned", "_carriage_returns")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # the buffer before this holds no separator: a long event is not scanned again
        self._carriage_returns = False  # seen in this stream: its events may end in any mix of line endings

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += chunk
        if self._carriage_returns or b"\r" in chunk:
            self._carriage_returns = True
            return self._feed_any_line_endings()
        # What every LLM server sends: events ended by "\n\n", split in one C call once the new bytes hold one.
        if buffer.find(b"\n\n", max(0, self._scanned - 1)) < 0:
            self._scanned = len(buffer)
            return []
        *events, rest = bytes(buffer).split(b"\n\n")
        del buffer[:len(buffer) - len(rest)]
        self._scanned = len(buffer)
        return [event + b"\n\n" for event in events]

    def _feed_any_line_endings(self) -> list[bytes]:
        buffer = self._buffer
        events: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(buffer, max(0, self._scanned - _LONGEST_END + 1)):
            events.append(bytes(buffer[start:match.end()]))
            start = match.end()
        del buffer[:start]
        self._scanned = len(buffer)
        return events

    def tail(self) -> bytes:
        """The bytes after the last whole event (an event the backend did not end with a blank line), and an
        empty framer."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        self._carriage_returns = False
        return rest


def event_data(event: bytes) -> bytes | None:
    """The event's data (its `data:` lines joined by newlines, as the SSE spec has it), or None when it has
    none: a comment (`: keep-alive`) or an event of other fields only."""
    if event[:6] == b"data: " and event[-2:] == b"\n\n":  # the one-line event LLM servers send, read as it is
        data = event[6:-2]
        if b"\n" not in data and b"\r" not in data:
            return data
    lines: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            lines.append(b"")
    return b"\n".join(lines) if lines else None
