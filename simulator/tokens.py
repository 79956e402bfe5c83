"""A tokenizer-free stand-in for a model's tokens: prompt lengths are estimated from characters and the
generated text is a deterministic walk through a small vocabulary, one word per token. A text that ends with a
token of the walk is continued by the walk's next token, so that an answer cut and continued from its own
text reads exactly as the uncut answer."""

from __future__ import annotations

# About four characters a token, as OpenAI's rule of thumb and the router's own estimate have it, so that
# the simulator's reported usage and the router's estimate for a silent backend agree in magnitude.
CHARS_PER_TOKEN = 4

_WORDS = (
    "the", "router", "sends", "each", "request", "to", "a", "backend", "that", "meets", "its", "policy",
    "right", "now", "while", "latency", "grows", "with", "load", "and", "tokens", "stream", "back", "one",
    "by", "over", "several", "regions", "where", "models", "answer", "quickly", "under", "budget", "of",
    "cost", "quality", "speed", "when", "capacity", "runs", "out", "queue", "waits", "in", "order", "until",
    "slot", "frees", "so", "clients", "see", "steady", "service", "even", "if", "some", "server", "fails",
    "breaker", "opens", "then", "recovers", "again",
)
# Leading spaces make the concatenated tokens read as words, as a BPE vocabulary's tokens do.
VOCABULARY: tuple[str, ...] = tuple(" " + word for word in _WORDS)

# Coprime with the vocabulary size, so a walk visits every word before repeating.
_STRIDE = 7
_POSITION = {token: index for index, token in enumerate(VOCABULARY)}


def estimate_tokens(text: str) -> int:
    """Characters / 4 rounded up, and at least 1: a real prompt always costs a token or more."""
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def generated_tokens(start: int, count: int) -> tuple[str, ...]:
    """`count` tokens beginning at vocabulary position `start`; the same arguments give the same text."""
    size = len(VOCABULARY)
    return tuple(VOCABULARY[(start + i * _STRIDE) % size] for i in range(count))


def continuation_start(text: str) -> int | None:
    """The vocabulary position of the token that follows `text` in the walk when `text` ends with one of its
    tokens (a space and a vocabulary word), else None."""
    head, space, word = text.rpartition(" ")
    if not space or not word:
        return None
    position = _POSITION.get(" " + word)
    return None if position is None else (position + _STRIDE) % len(VOCABULARY)
