"""An answer's time split the way LLM servers have it: time to first token (TTFT) and time per output token
(TPOT). Pure: the relay measures, this module derives what a whole (non-streamed) answer does not show."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AnswerTiming:
    ttft_ms: float
    tpot_ms: float | None  # None when the answer had fewer than two tokens: nothing to divide


def streamed_timing(total_ms: float, first_token_ms: float, completion_tokens: int) -> AnswerTiming:
    """A stream shows its first token; the tokens after it share the rest of the time."""
    ttft_ms = min(max(first_token_ms, 0.0), total_ms)
    if completion_tokens < 2:
        return AnswerTiming(ttft_ms, None)
    return AnswerTiming(ttft_ms, max(0.0, total_ms - ttft_ms) / (completion_tokens - 1))


def whole_answer_timing(total_ms: float, completion_tokens: int, ttft_estimate_ms: float | None) -> AnswerTiming:
    """A whole answer shows only its total time. Its TTFT is taken as the deployment's current estimate
    (from streams and probes; capped by the total), and the rest is divided among the tokens after the
    first. With no estimate yet, the first token is assumed to cost what each later one does."""
    total_ms = max(total_ms, 0.0)
    if completion_tokens < 2:
        return AnswerTiming(total_ms, None)
    if ttft_estimate_ms is None:
        per_token_ms = total_ms / completion_tokens
        return AnswerTiming(per_token_ms, per_token_ms)
    ttft_ms = min(max(ttft_estimate_ms, 0.0), total_ms)
    return AnswerTiming(ttft_ms, (total_ms - ttft_ms) / (completion_tokens - 1))


def overdue_after_ms(*, streaming: bool, ttft_threshold_ms: float, tpot_threshold_ms: float, rtt_ms: float,
                     max_tokens: int | None) -> float | None:
    """How long a request may go unanswered before it is certainly slow: a stream without its first token past
    the TTFT threshold; a whole answer capped at `max_tokens` not finished by then at the slowest TTFT and TPOT
    the thresholds allow. None when nothing is certain before the answer comes (a threshold is off, or a whole
    answer's length is unbounded)."""
    if ttft_threshold_ms <= 0:
        return None
    if streaming:
        return ttft_threshold_ms + rtt_ms
    if tpot_threshold_ms <= 0 or max_tokens is None:
        return None
    return ttft_threshold_ms + rtt_ms + tpot_threshold_ms * max(0, max_tokens - 1)


def slowness(timing: AnswerTiming, *, ttft_threshold_ms: float, tpot_threshold_ms: float,
             rtt_ms: float = 0.0) -> str | None:
    """Why this answer counts as slow for the backend's breaker, or None. TTFT is judged without the
    network round trip to a remote region, which says nothing about the backend; a threshold of 0 is off."""
    backend_ttft_ms = timing.ttft_ms - rtt_ms
    if 0.0 < ttft_threshold_ms < backend_ttft_ms:
        return f"ttft {backend_ttft_ms:.0f}ms>{ttft_threshold_ms:g}ms"
    if timing.tpot_ms is not None and 0.0 < tpot_threshold_ms < timing.tpot_ms:
        return f"tpot {timing.tpot_ms:.1f}ms>{tpot_threshold_ms:g}ms"
    return None
