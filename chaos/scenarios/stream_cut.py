"""A backend's links cut streams under way: `limit_data` closes each connection after a few kilobytes of answer
and `reset_peer` resets it shortly after the next bytes the backend sends. Both act on the answers' direction,
so every stream in flight on that backend when the fault begins is cut mid-answer (a request sent during the
fault fails before its first byte and moves on); the fault begins while one is under way. Every cut stream is
finished on another deployment in the same client stream; clients see no error and every stream whole."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

CUT_AFTER_BYTES = 4_096
"""About 20 tokens of stream events, as in the measurement that motivated resumption: a stream under way is cut
unless it was about to end."""
RESET_AFTER_MS = 150
"""A connection is reset this long after the first bytes the backend sends once the fault is on (those are
dropped, as a reset drops what was not delivered)."""
WAIT_FOR_STREAM_S = 2.0
"""Answers of a few hundred tokens at 1 ms a token leave a backend without a stream for a moment now and then; a
fault that begins in such a moment cuts only requests that have not started, which fail before their first byte
and open the breaker, and no stream is ever cut. The fault waits (this long at most) for one under way."""


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    backend = busiest_backend(handle, baseline)
    proxies = [p.name for p in handle.proxies(backend=backend)]
    waited_s = handle.wait_for_a_stream(backend, WAIT_FOR_STREAM_S)
    for name in proxies:
        handle.add_toxic(name, "chaos_stream_cut_limit", "limit_data", "downstream", {"bytes": CUT_AFTER_BYTES})
        handle.add_toxic(name, "chaos_stream_cut_reset", "reset_peer", "downstream", {"timeout": RESET_AFTER_MS})
    return {"backend": backend, "proxies": proxies, "cut_after_bytes": CUT_AFTER_BYTES,
            "reset_after_ms": RESET_AFTER_MS,
            "waited_for_a_stream_s": None if waited_s is None else round(waited_s, 3)}


SCENARIO = Scenario(
    name="stream-cut",
    description=f"Every link to the busiest backend closes each connection after {CUT_AFTER_BYTES} bytes of answer "
                f"(limit_data) and resets it {RESET_AFTER_MS} ms after the backend's next bytes (reset_peer), cutting "
                "streams mid-answer: the routers continue each one on another deployment.",
    injects=f"limit_data {CUT_AFTER_BYTES} B and reset_peer {RESET_AFTER_MS} ms (both downstream) on backend-<b> "
            "and xregion-*-<b>",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.streams_complete(), checks.streams_resumed_during_fault()),
)
