"""The simulator's settings: one frozen, validated value built from the command line, and replaced as a
whole when `POST /sim/config` changes the part that may change at run time."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meridian_common.catalog import ChatContinuation
from simulator.profiles import Profile

DEFAULT_MODEL = "sim-model"
# Far beyond any test or demo; it keeps one request from asking the simulator for gigabytes of text.
MAX_OUTPUT_TOKENS = 65_536
MAX_DELAY_MS = 600_000.0
# A spread of 4 already puts the 99th percentile 10,000 times above the median; more says nothing new.
MAX_OUTPUT_TOKENS_SIGMA = 4.0
MAX_RETRY_AFTER_S = 3600.0
# 32 slots of a 16k context each: the default capacity with room to spare. The project's realistic workload
# (prompts median 300 tokens, p99 about 6k; answers median 200) never comes near it, so requests wait for KV
# space only where a test or a scenario lowers the budget.
DEFAULT_KV_CACHE_TOKENS = 524_288
MAX_KV_CACHE_TOKENS = 1 << 40
# 2048 blocks of 64 tokens: 131,072 tokens of reusable prefixes, a quarter of the default KV cache.
DEFAULT_PREFIX_CACHE_BLOCKS = 2048
# About 100 bytes of memory a block: a million blocks is 100 MB, more than any simulated run needs.
MAX_PREFIX_CACHE_BLOCKS = 1_048_576


class UsageFormat(StrEnum):
    OPENAI = "openai"  # a `usage` object, as OpenAI and vLLM send it
    OLLAMA = "ollama"  # top-level `prompt_eval_count` / `eval_count`, as Ollama sends them
    NONE = "none"  # nothing, as some servers do; the router then has to estimate


class SettingsError(ValueError):
    """A setting that cannot be used: `field` names it, the message says what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    model: str = DEFAULT_MODEL
    profile: Profile = Profile.DENSE
    ttft_ms: float = 25.0
    itl_ms: float = 5.0
    capacity: int = 32
    error_rate: float = 0.0
    output_tokens: int = 16
    output_tokens_sigma: float = 0.0
    """0: every answer without max_tokens has `output_tokens`; above, a log-normal length with that median."""
    usage_format: UsageFormat = UsageFormat.OPENAI
    chat_continuation: ChatContinuation = ChatContinuation.VLLM
    """Which servers' way of continuing a chat's final assistant message the simulator takes: vLLM's two fields,
    or (prefill) a final assistant message continued as it is, those two fields refused with 400."""
    seed: int | None = None
    throttle_rate: float = 0.0
    """Probability that a request gets 429 before any byte, as a saturated or rate-limited server answers."""
    retry_after_s: float | None = None
    """The Retry-After (seconds) those 429s carry; None: no such header."""
    prefill_ms_per_1k: float = 10.0
    """Prefill time per 1,000 uncached prompt tokens at no load, before the attention growth: 10 ms is about
    100k prompt tokens/s, a mid-size model on a modern GPU; a 300-token prompt then adds 3 ms."""
    kv_cache_tokens: int = DEFAULT_KV_CACHE_TOKENS
    """The KV cache's size in tokens; a request reserves its share at admission and waits while it does
    not fit."""
    prefix_cache_blocks: int = DEFAULT_PREFIX_CACHE_BLOCKS
    """Block hashes the prefix cache keeps (least recently used evicted first); 0 disables it."""
    cut_after_tokens: int = 0
    """Every stream longer than this many tokens is cut after them: half of the next event is written and the
    connection closed, as a backend that dies mid-answer does; 0: off."""
    cut_rate: float = 0.0
    """Probability that a stream is cut that way after a uniformly drawn number of its tokens (at least one,
    fewer than all); `cut_after_tokens`, when set, decides instead."""
    api_key: str | None = dataclasses.field(default=None, repr=False)
    """When set, every /v1 request must carry `Authorization: Bearer <api_key>` (401 otherwise), as vLLM's
    `--api-key` asks. Never shown."""

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise SettingsError("model", "must not be empty")
        if not isinstance(self.profile, Profile):
            raise SettingsError("profile", f"expected one of {[p.value for p in Profile]}")
        if not isinstance(self.usage_format, UsageFormat):
            raise SettingsError("usage_format", f"expected one of {[u.value for u in UsageFormat]}")
        if not isinstance(self.chat_continuation, ChatContinuation):
            raise SettingsError("chat_continuation", f"expected one of {[c.value for c in ChatContinuation]}")
        for name in ("ttft_ms", "itl_ms", "prefill_ms_per_1k"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= MAX_DELAY_MS:
                raise SettingsError(name, f"expected milliseconds from 0 to {MAX_DELAY_MS:.0f}, got {value}")
        if self.capacity < 1:
            raise SettingsError("capacity", f"expected 1 or more concurrent requests, got {self.capacity}")
        if not 1 <= self.kv_cache_tokens <= MAX_KV_CACHE_TOKENS:
            raise SettingsError("kv_cache_tokens",
                                f"expected 1 to {MAX_KV_CACHE_TOKENS} tokens, got {self.kv_cache_tokens}")
        if not 0 <= self.prefix_cache_blocks <= MAX_PREFIX_CACHE_BLOCKS:
            raise SettingsError("prefix_cache_blocks", f"expected 0 (disabled) to {MAX_PREFIX_CACHE_BLOCKS} blocks, "
                                f"got {self.prefix_cache_blocks}")
        if not 0 <= self.cut_after_tokens <= MAX_OUTPUT_TOKENS:
            raise SettingsError("cut_after_tokens", f"expected 0 (off) to {MAX_OUTPUT_TOKENS} tokens, got "
                                f"{self.cut_after_tokens}")
        for name in ("error_rate", "throttle_rate", "cut_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise SettingsError(name, f"expected a probability from 0 to 1, got {value}")
        if self.retry_after_s is not None and not (
                math.isfinite(self.retry_after_s) and 0.0 <= self.retry_after_s <= MAX_RETRY_AFTER_S):
            raise SettingsError("retry_after_s", f"expected seconds from 0 to {MAX_RETRY_AFTER_S:.0f}, or none, got "
                                f"{self.retry_after_s}")
        if self.api_key is not None and not self.api_key.strip():
            raise SettingsError("api_key", "must not be empty")
        if not 1 <= self.output_tokens <= MAX_OUTPUT_TOKENS:
            raise SettingsError("output_tokens",
                                f"expected 1 to {MAX_OUTPUT_TOKENS} tokens, got {self.output_tokens}")
        if not (math.isfinite(self.output_tokens_sigma) and 0.0 <= self.output_tokens_sigma <= MAX_OUTPUT_TOKENS_SIGMA):
            raise SettingsError("output_tokens_sigma", f"expected a log-normal spread from 0 to "
                                f"{MAX_OUTPUT_TOKENS_SIGMA:g}, got {self.output_tokens_sigma}")

    def runtime_view(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, for `GET /sim/config`."""
        return {
            "model": self.model,
            "profile": self.profile.value,
            "ttft_ms": self.ttft_ms,
            "itl_ms": self.itl_ms,
            "capacity": self.capacity,
            "error_rate": self.error_rate,
            "output_tokens": self.output_tokens,
            "output_tokens_sigma": self.output_tokens_sigma,
            "usage_format": self.usage_format.value,
            "chat_continuation": self.chat_continuation.value,
            "seed": self.seed,
            "throttle_rate": self.throttle_rate,
            "retry_after_s": self.retry_after_s,
            "api_key_required": self.api_key is not None,
            "prefill_ms_per_1k": self.prefill_ms_per_1k,
            "kv_cache_tokens": self.kv_cache_tokens,
            "prefix_cache_blocks": self.prefix_cache_blocks,
            "cut_after_tokens": self.cut_after_tokens,
            "cut_rate": self.cut_rate,
        }


RUNTIME_FIELDS = ("error_rate", "ttft_ms", "itl_ms", "capacity", "profile", "throttle_rate", "retry_after_s",
                  "prefill_ms_per_1k", "kv_cache_tokens", "prefix_cache_blocks", "cut_after_tokens", "cut_rate")
_WHOLE_NUMBER_FIELDS = {"capacity": "requests", "kv_cache_tokens": "tokens", "prefix_cache_blocks": "blocks",
                        "cut_after_tokens": "tokens"}


def _number(field: str, value: object) -> float:
    # bool is an int to Python but never a sensible latency or probability in a JSON body.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(field, f"expected a number, got {value!r}")
    return float(value)


def _runtime_value(field: str, value: object) -> Any:
    if field == "profile":
        if not isinstance(value, str) or value not in {p.value for p in Profile}:
            raise SettingsError(field, f"expected one of {[p.value for p in Profile]}, got {value!r}")
        return Profile(value)
    if field == "retry_after_s" and value is None:
        return None
    if field in _WHOLE_NUMBER_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(field, f"expected a whole number of {_WHOLE_NUMBER_FIELDS[field]}, got {value!r}")
        return value
    return _number(field, value)


def with_runtime_changes(settings: SimulatorSettings, changes: object) -> SimulatorSettings:
    """`settings` with the changes of a `POST /sim/config` body applied, all validated before any is."""
    if not isinstance(changes, Mapping):
        raise SettingsError("(body)", f"expected a JSON object with some of {list(RUNTIME_FIELDS)}")
    unknown = sorted(str(k) for k in changes if k not in RUNTIME_FIELDS)
    if unknown:
        raise SettingsError(unknown[0],
                            f"cannot be changed at run time; expected some of {list(RUNTIME_FIELDS)}")
    typed = {field: _runtime_value(field, value) for field, value in changes.items()}
    return dataclasses.replace(settings, **typed)
