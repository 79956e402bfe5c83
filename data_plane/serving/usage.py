"""Token usage normalised from the shapes real backends return, or estimated (and marked so).

OpenAI and vLLM send `usage.prompt_tokens` / `usage.completion_tokens`; Ollama sends
`prompt_eval_count` / `eval_count`; some servers send nothing, and then the router estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_CHARS_PER_TOKEN = 4
_USD_PLACES = 12  # a millionth of a millionth of a dollar: below any one token's price, above float noise

COST_HEADER = "x-meridian-cost-usd"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, cost_per_1m_input: float, cost_per_1m_output: float) -> float:
        return (self.prompt_tokens * cost_per_1m_input + self.completion_tokens * cost_per_1m_output) / 1e6

    def as_openai(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def usd(amount: float) -> str:
    """A cost in dollars as a plain decimal, never in exponent form: 0.00012345, 0."""
    return f"{amount:.{_USD_PLACES}f}".rstrip("0").rstrip(".")


def estimate_tokens(chars: int) -> int:
    """A tokenizer-free estimate from a text's length (about four characters a token), never below 1 for
    non-empty text."""
    return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def reported_usage(payload: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens as a backend reported them in a response or final chunk, if it did."""
    usage = payload.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        completion = usage.get("completion_tokens")
        return usage["prompt_tokens"], completion if isinstance(completion, int) else 0
    if isinstance(payload.get("prompt_eval_count"), int) or isinstance(payload.get("eval_count"), int):
        return int(payload.get("prompt_eval_count") or 0), int(payload.get("eval_count") or 0)
    return None


def completion_text(payload: dict[str, Any]) -> str:
    """The generated text of a response or a stream chunk (message, delta or text choices)."""
    texts: list[str] = []
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        for holder in (choice.get("message"), choice.get("delta")):
            if isinstance(holder, dict) and isinstance(holder.get("content"), str):
                texts.append(holder["content"])
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return "".join(texts)


def answer_usage(payload: dict[str, Any], prompt_tokens: int) -> Usage:
    """The usage a whole answer reports, or the request's estimated prompt tokens and an estimate from the
    answer's text (read only then: most backends report)."""
    reported = reported_usage(payload)
    if reported is not None:
        return Usage(reported[0], reported[1], estimated=False)
    return Usage(prompt_tokens, estimate_tokens(len(completion_text(payload))), estimated=True)
