"""Token usage normalised from the shapes real backends return, or estimated (and marked so).

OpenAI and vLLM send `usage.prompt_tokens` / `usage.completion_tokens`; Ollama sends
`prompt_eval_count` / `eval_count`; some servers send nothing, and then the router estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_CHARS_PER_TOKEN = 4


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


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token), never below 1 for non-empty text."""
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request sends: chat messages (string or content parts), a prompt, or embedding input."""
    parts: list[str] = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts += [v for v in value if isinstance(v, str)]
    return "\n".join(parts)


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


def normalise(reported: tuple[int, int] | None, prompt: str, completion: str) -> Usage:
    if reported is not None:
        return Usage(reported[0], reported[1], estimated=False)
    return Usage(estimate_tokens(prompt), estimate_tokens(completion), estimated=True)
