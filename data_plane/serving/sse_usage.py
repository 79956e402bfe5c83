"""Reads token usage out of a stream's events as they pass, without holding the stream back, and notes what
ends a stream: its `[DONE]`, or an event that shows the backend broke (malformed, or an error event)."""

from __future__ import annotations

import orjson

from data_plane.serving.sse_events import event_data
from data_plane.serving.stream_cut import Cut, CutReason
from data_plane.serving.usage import reported_usage

_ERROR_START = b'{"error"'  # an error event as vLLM and OpenAI write it: the error is the first key


class StreamUsageScanner:
    """Fed each whole event as it is relayed; counts content chunks (the estimate when the backend reports
    nothing), keeps the last usage the backend reported, and sets `done` at `[DONE]` and `fault` at an event
    that must not reach the client (nor any after it)."""

    __slots__ = ("content_chunks", "done", "fault", "reported")

    def __init__(self) -> None:
        self.content_chunks = 0
        self.reported: tuple[int, int] | None = None
        self.done = False
        self.fault: Cut | None = None

    def observe(self, event: bytes) -> bool:
        """Reads one event; True when it is a usage-only chunk: no choices (`"choices": []`, what a backend
        sends last when asked for `stream_options.include_usage`) and a usage it reports."""
        data = event_data(event)
        # Slices and `in` tests rather than method calls: this runs for every event of every stream. Only the
        # brackets are looked at: a backend's JSON is parsed only where it has usage, or is an error.
        if data is None or data[:1] != b"{" or data[-1:] != b"}":
            data = (data or b"").strip()
            if not data:
                return False
            if data == b"[DONE]":
                self.done = True
                return False
            if not (data.startswith(b"{") and data.endswith(b"}")):
                self.fault = Cut(CutReason.MALFORMED, f"event data {data[:80]!r}")
                return False
        if data[:len(_ERROR_START)] == _ERROR_START or b'"usage"' in data or b"eval_count" in data:
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.fault = Cut(CutReason.MALFORMED, f"event data {data[:80]!r}")
                return False
            if isinstance(payload, dict) and "error" in payload:
                self.fault = Cut(CutReason.ERROR_EVENT, f"error event {data[:200]!r}")
                return False
            usage = reported_usage(payload) if isinstance(payload, dict) else None
            if usage is not None:
                self.reported = usage
            if isinstance(payload, dict) and not payload.get("choices"):
                return usage is not None  # no content either way
        self.content_chunks += 1
        return False
