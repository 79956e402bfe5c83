"""The telemetry stream between the planes: each router appends TelemetryBatch entries to its region's Redis
stream `meridian:telemetry:<region>`, and the control plane's leader reads every region's stream."""

from __future__ import annotations

STREAM_PREFIX = "meridian:telemetry:"
BATCH_FIELD = b"batch"
"""The one field of each stream entry: a serialized TelemetryBatch."""


def stream_key(region: str) -> str:
    return STREAM_PREFIX + region
