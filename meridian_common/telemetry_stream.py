"""The telemetry stream between the planes: each router appends TelemetryBatch entries to its region's Redis
stream `meridian:telemetry:<region>`, and the control plane's leader reads every region's stream."""

from __future__ import annotations

from urllib.parse import urlsplit

STREAM_PREFIX = "meridian:telemetry:"
BATCH_FIELD = b"batch"
"""The one field of each stream entry: a serialized TelemetryBatch."""


def stream_key(region: str) -> str:
    return STREAM_PREFIX + region


def redis_endpoint(url: str) -> str:
    """host:port of a Redis URL, for logs: the URL itself may carry a password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
