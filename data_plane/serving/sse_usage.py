"""Reads token usage out of a server-sent-events stream as it passes, without holding the stream back."""

from __future__ import annotations

import orjson

from data_plane.serving.usage import reported_usage

_USAGE_MARKERS = (b'"usage"', b"eval_count")


class StreamUsageScanner:
    """Fed each chunk as it is forwarded; counts content chunks (the estimate when the backend reports
    nothing) and keeps the last usage the backend reported."""

    __slots__ = ("_partial", "content_chunks", "reported")

    def __init__(self) -> None:
        self._partial = b""
        self.content_chunks = 0
        self.reported: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or not data:
                continue
            if any(marker in data for marker in _USAGE_MARKERS):
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    continue
                usage = reported_usage(payload) if isinstance(payload, dict) else None
                if usage is not None:
                    self.reported = usage
                if isinstance(payload, dict) and not payload.get("choices"):
                    continue
            self.content_chunks += 1
