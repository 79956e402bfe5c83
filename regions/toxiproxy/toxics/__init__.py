"""Toxiproxy's toxics, one module each; importing this package fills `REGISTRY` (type name -> class)."""

from __future__ import annotations

from regions.toxiproxy.toxics import (  # noqa: F401  (imported to register)
    bandwidth,
    latency,
    limit_data,
    noop,
    reset_peer,
    slicer,
    slow_close,
    timeout,
)
from regions.toxiproxy.toxics.toxic import REGISTRY, Chunk, StreamClosed, Toxic, ToxicStub

__all__ = ["REGISTRY", "Chunk", "StreamClosed", "Toxic", "ToxicStub"]
