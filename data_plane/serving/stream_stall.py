"""When a started stream counts as stalled, and the watch that wakes its relay when it does.

The watch costs nothing per chunk: a timer ticks four times per stall timeout and compares the bytes the
upstream reader has received with the last tick's; after a full timeout without one it fails the pending read.
A stall is so detected between one and one and a quarter stall timeouts after the last byte.
"""

from __future__ import annotations

import asyncio

import aiohttp

from data_plane.config import StreamStallConfig

_TICKS = 4


class StreamStalled(TimeoutError):
    """The backend sent nothing for the stall timeout in the middle of a stream."""


def stall_timeout_s(tpot_ms: float | None, config: StreamStallConfig) -> float:
    """`tpot_multiple` times the deployment's time per output token within [floor_s, cap_s]; the cap when the
    TPOT is unknown (None or 0)."""
    if not tpot_ms:
        return config.cap_s
    return min(config.cap_s, max(config.floor_s, tpot_ms * config.tpot_multiple / 1000))


class StallWatch:
    __slots__ = ("_content", "_handle", "_interval_s", "_quiet", "_seen", "stall_s")

    def __init__(self, content: aiohttp.StreamReader, stall_s: float) -> None:
        self._content = content
        self.stall_s = stall_s
        self._interval_s = stall_s / _TICKS
        self._seen = content.total_bytes
        self._quiet = 0
        self._handle = asyncio.get_running_loop().call_later(self._interval_s, self._tick)

    def _tick(self) -> None:
        received = self._content.total_bytes
        self._quiet = 0 if received != self._seen else self._quiet + 1
        self._seen = received
        if self._quiet >= _TICKS:
            self._content.set_exception(StreamStalled(f"no byte for {self.stall_s:.1f}s"))
            return
        self._handle = asyncio.get_running_loop().call_later(self._interval_s, self._tick)

    def stop(self) -> None:
        self._handle.cancel()
