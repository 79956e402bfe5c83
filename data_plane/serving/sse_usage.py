"""Reads token usage out of a stream's events as they pass, without holding the stream back."""

from __future__ import annotations

import orjson

from data_plane.serving.sse_events import event_data
from data_plane.serving.usage import reported_usage

_USAGE_MARKERS = (b'"usage"', b"eval_count")


class StreamUsageScanner:
    """Fed each whole event as it is relayed; counts content chunks (the estimate when the backend reports
    nothing) and keeps the last usage the backend reported."""

    __slots__ = ("content_chunks", "reported")

    def __init__(self) -> None:
        self.content_chunks = 0
        self.reported: tuple[int, int] | None = None

    def observe(self, event: bytes) -> bool:
        """Reads one event; True when it is a usage-only chunk: no choices (`"choices": []`, what a backend
        sends last when asked for `stream_options.include_usage`) and a usage it reports."""
        data = (event_data(event) or b"").strip()
        if not data or data == b"[DONE]":
            return False
        if any(marker in data for marker in _USAGE_MARKERS):
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                payload = None
            usage = reported_usage(payload) if isinstance(payload, dict) else None
            if usage is not None:
                self.reported = usage
            if isinstance(payload, dict) and not payload.get("choices"):
                return usage is not None  # no content either way
        self.content_chunks += 1
        return False
