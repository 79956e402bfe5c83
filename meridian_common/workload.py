"""The traffic Meridian is exercised with: one model of what LLM clients send, shared by the demo, the chaos
load, the benchmarks and the simulators' natural answer length (docs/workload.md says where its figures
come from). Answers run to hundreds of tokens with a long tail, half are streamed, prompts go from a line to
tens of thousands of tokens; the tiny answers of early tests are the `TINY` preset, for the places that say
why they need it.

Pure: no I/O and no clock; randomness comes from the `random.Random` the caller passes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from meridian_common.catalog import FrozenModel

# The simulator and the router estimate a text's tokens as ceil(characters / 4).
CHARS_PER_TOKEN = 4


class WorkloadConfig(FrozenModel):
    """Answer and prompt lengths (log-normal: a median, a spread, a cap) and how requests are sent."""

    answer_tokens_median: int = Field(200, ge=1)
    answer_tokens_sigma: float = Field(0.8, ge=0, allow_inf_nan=False, description="log-normal spread")
    answer_tokens_max: int = Field(2048, ge=1)
    prompt_tokens_median: int = Field(300, ge=1)
    prompt_tokens_sigma: float = Field(1.3, ge=0, allow_inf_nan=False, description="log-normal spread")
    prompt_tokens_max: int = Field(32000, ge=1)
    stream_share: float = Field(0.5, ge=0, le=1, description="share of requests streamed (SSE)")
    max_tokens_share: float = Field(
        0.7, ge=0, le=1, description="share of requests that set max_tokens to their drawn answer length; the "
                                     "others set none and get the backend's natural length")
    shared_prefixes: int = Field(
        0, ge=0, le=10_000, description="K system prompts or documents shared by the requests: each request "
                                        "starts with one of them (uniformly), then its own prompt; 0: none")
    shared_prefix_tokens: int = Field(
        3000, ge=1, le=1_000_000, description="mean length of a shared prefix; prefix i of K is long from 2/3 to "
                                              "4/3 of it, evenly spread")

    @field_validator("answer_tokens_max", "prompt_tokens_max")
    @classmethod
    def _max_not_below_median(cls, value: int, info: ValidationInfo) -> int:
        median_field = str(info.field_name).replace("_max", "_median")
        median = info.data.get(median_field)
        if median is not None and value < median:
            raise ValueError(f"must be >= {median_field} ({median}), got {value}")
        return value

    def answer_tokens_quantile(self, q: float) -> int:
        return lognormal_quantile(self.answer_tokens_median, self.answer_tokens_sigma, q, self.answer_tokens_max)

    def shared_prefix_length(self, index: int) -> int:
        """The tokens of shared prefix `index` (0 <= index < shared_prefixes): from 2/3 to 4/3 of the mean,
        evenly spread, so that the prefixes are not all one size and their mean is `shared_prefix_tokens`."""
        if not 0 <= index < self.shared_prefixes:
            raise ValueError(f"prefix index must be in [0, {self.shared_prefixes}), got {index}")
        share = 0.5 if self.shared_prefixes == 1 else index / (self.shared_prefixes - 1)
        return max(1, round(self.shared_prefix_tokens * (2 / 3 + 2 / 3 * share)))

    def describe(self) -> str:
        """One line for a report or a bench's output."""
        prompts = "prompts" if not self.shared_prefixes else (
            f"{self.shared_prefixes} shared prefixes of {self.shared_prefix_length(0)}-"
            f"{self.shared_prefix_length(self.shared_prefixes - 1)} tokens, each followed by a prompt")
        return (f"answers median {self.answer_tokens_median} tokens (p95 {self.answer_tokens_quantile(0.95)}, "
                f"p99 {self.answer_tokens_quantile(0.99)}, max {self.answer_tokens_max}), {prompts} median "
                f"{self.prompt_tokens_median} tokens (max {self.prompt_tokens_max}), {self.stream_share:.0%} "
                f"streamed, {self.max_tokens_share:.0%} set max_tokens")


REALISTIC = WorkloadConfig()
"""The defaults: what a client sends unless it says otherwise."""

TINY = WorkloadConfig(
    answer_tokens_median=8, answer_tokens_sigma=0.2, answer_tokens_max=16,
    prompt_tokens_median=10, prompt_tokens_sigma=0.3, prompt_tokens_max=32,
    stream_share=0.0,
    # Every request caps its answer: a backend's natural length is the realistic one, not a tiny one.
    max_tokens_share=1.0,
)
"""Answers of about 4 to 16 tokens (median 8), a one-line prompt, nothing streamed."""

LONG_CONTEXT = WorkloadConfig(prompt_tokens_median=22_000, prompt_tokens_sigma=0.2, prompt_tokens_max=32_000)
"""Retrieval- and document-sized prompts (about 16k to 32k tokens: p5 ~15,900, p95 ~30,500, capped at a 32k
context) with the realistic answers: what the demo's long-context phase adds to the clients' own traffic."""


@dataclass(frozen=True, slots=True)
class RequestShape:
    prompt_tokens: int
    """The request's own prompt, after the shared prefix if it has one."""
    answer_tokens: int
    """The answer's length; sent as max_tokens when `sets_max_tokens`, else only what the client expects."""
    stream: bool
    sets_max_tokens: bool
    prefix: int | None = None
    """Which shared prefix the prompt starts with (sent as a system message), or None."""
    prefix_tokens: int = 0
    """That prefix's length."""

    @property
    def total_prompt_tokens(self) -> int:
        return self.prefix_tokens + self.prompt_tokens


def lognormal_tokens(median: int, sigma: float, maximum: int, rng: random.Random) -> int:
    """A log-normal length around `median`, clipped to [1, maximum]; `sigma` 0 is `median` and draws nothing."""
    value = median * math.exp(sigma * rng.gauss(0.0, 1.0)) if sigma > 0 else median
    return max(1, min(maximum, round(value)))


def lognormal_quantile(median: int, sigma: float, q: float, maximum: int) -> int:
    """The q-quantile (0 < q < 1) of `lognormal_tokens`' distribution."""
    return max(1, min(maximum, round(median * math.exp(sigma * NormalDist().inv_cdf(q)))))


def draw(config: WorkloadConfig, rng: random.Random) -> RequestShape:
    shape = RequestShape(
        prompt_tokens=lognormal_tokens(config.prompt_tokens_median, config.prompt_tokens_sigma,
                                       config.prompt_tokens_max, rng),
        answer_tokens=lognormal_tokens(config.answer_tokens_median, config.answer_tokens_sigma,
                                       config.answer_tokens_max, rng),
        stream=rng.random() < config.stream_share,
        sets_max_tokens=rng.random() < config.max_tokens_share,
    )
    if not config.shared_prefixes:
        return shape  # drawn last and only when asked for, so workloads without prefixes keep their sequence
    prefix = rng.randrange(config.shared_prefixes)
    return replace(shape, prefix=prefix, prefix_tokens=config.shared_prefix_length(prefix))


def median_shape(config: WorkloadConfig, *, stream: bool) -> RequestShape:
    """The typical request of a workload (both medians, max_tokens set), for one-off measurements."""
    return RequestShape(config.prompt_tokens_median, config.answer_tokens_median, stream, sets_max_tokens=True)


@dataclass(frozen=True, slots=True)
class WorkloadOverrides:
    """Command-line changes applied to every client's own workload; None leaves a field as the client has it."""

    answer_tokens_median: int | None = None
    prompt_tokens_median: int | None = None
    stream_share: float | None = None
    tiny: bool = False
    """Start from `TINY` instead of the client's workload."""

    def apply(self, config: WorkloadConfig) -> WorkloadConfig:
        """The overridden workload, validated (a ValidationError names the field). A median past its cap
        raises the cap to it: the flag asks for that median."""
        fields = (TINY if self.tiny else config).model_dump()
        if self.answer_tokens_median is not None:
            fields["answer_tokens_median"] = self.answer_tokens_median
            fields["answer_tokens_max"] = max(fields["answer_tokens_max"], self.answer_tokens_median)
        if self.prompt_tokens_median is not None:
            fields["prompt_tokens_median"] = self.prompt_tokens_median
            fields["prompt_tokens_max"] = max(fields["prompt_tokens_max"], self.prompt_tokens_median)
        if self.stream_share is not None:
            fields["stream_share"] = self.stream_share
        return WorkloadConfig.model_validate(fields)


NO_OVERRIDES = WorkloadOverrides()


# A fixed pseudo-random word walk (a linear congruential sequence), long enough that prompts cut from it at a
# random offset differ; a prompt of any length is a slice of it repeated, so building one costs string copies.
_WORDS = ("the", "router", "sends", "each", "request", "to", "a", "backend", "that", "meets", "its", "policy",
          "while", "latency", "grows", "with", "load", "and", "answers", "stream", "back", "over", "several",
          "regions", "where", "models", "serve", "under", "budget", "of", "cost", "quality", "when", "capacity",
          "runs", "out", "queue", "waits", "in", "order", "until", "slot", "frees", "so", "clients", "see",
          "steady", "service", "even", "if", "one", "server", "fails", "summarise", "this", "document",
          "explain", "why", "code", "review", "table", "below", "please", "context")


def _word_walk(count: int) -> str:
    state, words = 1, []
    for _ in range(count):
        state = (state * 1103515245 + 12345) % 2**31
        words.append(_WORDS[(state >> 16) % len(_WORDS)])
    return " ".join(words) + " "


_WALK = _word_walk(1024)


def prompt_text(prompt_tokens: int, rng: random.Random) -> str:
    """`prompt_tokens` * 4 characters (so ceil(chars / 4) is `prompt_tokens`), starting with a per-request
    tag and continuing at a random point of the word walk: no two prompts alike, none cacheable."""
    length = prompt_tokens * CHARS_PER_TOKEN
    offset = rng.randrange(len(_WALK))
    text = f"[{rng.getrandbits(32):08x}] " + _WALK[offset:].lstrip()
    if len(text) < length:
        text += _WALK * (1 + (length - len(text)) // len(_WALK))
    return text[:length]


def shared_prefix_text(index: int, prefix_tokens: int) -> str:
    """Shared prefix `index`: `prefix_tokens` * 4 characters, the same in every request and every process (no
    random source), and unlike every other prefix from its first block on."""
    length = prefix_tokens * CHARS_PER_TOKEN
    offset = (index * 7919) % len(_WALK)
    text = f"[shared prefix {index}] You are the assistant of team {index}. " + _WALK[offset:].lstrip()
    if len(text) < length:
        text += _WALK * (1 + (length - len(text)) // len(_WALK))
    return text[:length]


def chat_body(model: str, shape: RequestShape, rng: random.Random) -> dict[str, Any]:
    """An OpenAI chat completion request of this shape: its shared prefix, if any, is the system message."""
    messages = [{"role": "user", "content": prompt_text(shape.prompt_tokens, rng)}]
    if shape.prefix is not None:
        messages.insert(0, {"role": "system", "content": shared_prefix_text(shape.prefix, shape.prefix_tokens)})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if shape.sets_max_tokens:
        body["max_tokens"] = shape.answer_tokens
    if shape.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def simulator_flags(config: WorkloadConfig) -> list[str]:
    """`meridian sim-backend` flags that make a simulator's natural answer length (for requests without
    max_tokens) follow this workload's answer distribution."""
    return ["--output-tokens", str(config.answer_tokens_median),
            "--output-tokens-sigma", str(config.answer_tokens_sigma)]
