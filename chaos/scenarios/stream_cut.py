"""A backend's links cut streams under way: `limit_data` closes each connection after some kilobytes and
`reset_peer` resets it shortly after its first byte. Every stream the routers had started on it is finished on
another deployment in the same client stream; clients see no error and every stream whole."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaos import checks
from chaos.scenario import Scenario
from chaos.scenarios.targets import busiest_backend
from harness.stack_handle import StackHandle
from harness.timeline import Timeline

CUT_AFTER_BYTES = 16_384
"""About 80 tokens of stream events: most realistic answers (median 200 tokens) are cut, short ones pass."""
RESET_AFTER_MS = 150
"""A connection is reset this long after its first byte: longer streams on a slower backend are cut this way."""


def inject(handle: StackHandle, baseline: Timeline) -> Mapping[str, Any]:
    backend = busiest_backend(handle, baseline)
    proxies = [p.name for p in handle.proxies(backend=backend)]
    for name in proxies:
        handle.add_toxic(name, "chaos_stream_cut_limit", "limit_data", "downstream", {"bytes": CUT_AFTER_BYTES})
        handle.add_toxic(name, "chaos_stream_cut_reset", "reset_peer", "upstream", {"timeout": RESET_AFTER_MS})
    return {"backend": backend, "proxies": proxies, "cut_after_bytes": CUT_AFTER_BYTES,
            "reset_after_ms": RESET_AFTER_MS}


SCENARIO = Scenario(
    name="stream-cut",
    description=f"Every link to the busiest backend closes each connection after {CUT_AFTER_BYTES} bytes "
                f"(limit_data) and resets it {RESET_AFTER_MS} ms after its first byte (reset_peer), cutting streams "
                "mid-answer: the routers continue each one on another deployment.",
    injects=f"limit_data {CUT_AFTER_BYTES} B (downstream) and reset_peer {RESET_AFTER_MS} ms on backend-<b> and "
            "xregion-*-<b>",
    inject=inject,
    checks=(checks.zero_client_errors(), checks.streams_complete(), checks.streams_resumed_during_fault()),
)
