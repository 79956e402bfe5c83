"""The model catalog schema both planes read: logical models, their deployments and routing defaults.

The router's config file and the control plane's catalog share it, and `model_route_proto` turns an
entry into the routing-table contract, so a table means the same thing whoever built it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS
from meridian_proto import routing_pb2


class ChatContinuation(StrEnum):
    """How a chat stream cut elsewhere is continued on a deployment: vLLM's and SGLang's parameters, or the bare
    partial assistant message for servers that continue it as it is."""

    VLLM = "vllm"
    PREFILL = "prefill"


class FrozenModel(BaseModel):
    """Base of every config object: immutable, and unknown fields are errors (typos surface)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentConfig(FrozenModel):
    name: str = Field(min_length=1)
    url: HttpUrl
    urls_by_region: dict[str, HttpUrl] = Field(
        {}, description="the URL routers of a given region use instead of `url` (e.g. through a proxy)"
    )
    served_model: str = Field(min_length=1)
    region: str = Field(min_length=1)
    architecture: Literal["dense", "moe", "linear-attention", "hybrid", "other"] = "dense"
    cost_per_1m_input: float = Field(0.0, ge=0)
    cost_per_1m_output: float = Field(0.0, ge=0)
    quality: float = Field(0.5, ge=0, le=1)
    max_concurrency: int = Field(0, ge=0, description="0 = unlimited")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    weight: float = Field(1.0, ge=0)
    rpm_limit: int = Field(0, ge=0)
    tpm_limit: int = Field(0, ge=0)
    context_window: int = Field(0, ge=0, description="most tokens (prompt + answer) the deployment accepts, as "
                                "its server's max_model_len; a longer request is not sent there; 0 = not declared")
    chat_continuation: ChatContinuation | None = Field(
        None, description="how a chat stream cut elsewhere is continued on this deployment: vllm (vLLM, SGLang) or "
        "prefill (servers that continue a final assistant message as it is); unset = the router's chat_continuation")


# Fields that judged a whole answer's time, which grows with the answer's length; each names its replacement.
_REPLACED_FIELDS = {
    "p95_threshold_ms": "ttft_p95_threshold_ms and tpot_p95_threshold_ms (breakers judge time to first token "
                        "and time per output token, never a whole answer's time, which grows with its length)",
}


class BreakerConfig(FrozenModel):
    """When a router stops sending to a deployment: errors, or a slow backend (TTFT or TPOT p95 over its
    threshold), never a long answer. At most `max_ejection_percent` of a model's deployments are open at once."""

    error_rate_threshold: float = Field(0.5, gt=0, le=1)
    ttft_p95_threshold_ms: float = Field(0.0, ge=0, description="time to first token, RTT excluded; 0 = off")
    tpot_p95_threshold_ms: float = Field(0.0, ge=0, description="time per output token; 0 = off")
    min_requests: int = Field(5, ge=1)
    open_duration_s: float = Field(5.0, gt=0)
    window_s: float = Field(10.0, gt=0)
    consecutive_failures: int = Field(5, ge=0, description="open after this many failed or slow answers in a "
                                                            "row; 0 = off")
    max_ejection_percent: float = Field(50.0, ge=0, le=100, description="share of a model's deployments that "
                                        "breakers may hold open at once in a router; at least one")

    @model_validator(mode="before")
    @classmethod
    def _no_replaced_fields(cls, data: object) -> object:
        if isinstance(data, dict):
            for name, replacement in _REPLACED_FIELDS.items():
                if name in data:
                    raise ValueError(f"{name} is no longer supported: use {replacement}")
        return data


class CacheConfig(FrozenModel):
    enabled: bool = False
    ttl_s: float = Field(300.0, gt=0)


class RateLimitsConfig(FrozenModel):
    rpm: int = Field(0, ge=0, description="requests per minute, 0 = none")
    tpm: int = Field(0, ge=0, description="tokens per minute, 0 = none")


class QueueConfig(FrozenModel):
    size: int = Field(100, ge=0, description="requests that may wait for a free deployment; 0 = none wait")
    timeout_s: float = Field(30.0, gt=0, description="longest wait before 503 with Retry-After")


class ScoreWeightsConfig(FrozenModel):
    latency: float = Field(ge=0)
    cost: float = Field(ge=0)
    quality: float = Field(ge=0)
    load: float = Field(0.0, ge=0, description="the engine's queue and KV-cache use; 0 = not weighed")

    @model_validator(mode="after")
    def _some_weight(self) -> ScoreWeightsConfig:
        if not self.latency + self.cost + self.quality + self.load > 0:
            raise ValueError("at least one of latency, cost, quality and load must be above 0")
        return self


class SaturationConfig(FrozenModel):
    """A deployment whose engine reports more waiting requests or a fuller KV cache than this is not a
    candidate, unless every deployment of the model is over (then the thresholds are ignored)."""

    max_requests_waiting: int = Field(8, ge=0, description="the engine's waiting queue; 0 = no limit")
    max_kv_cache_usage: float = Field(0.95, ge=0, le=1, description="fraction of the KV cache in use; 0 = no limit")


class RoutingDefaults(FrozenModel):
    """How a logical model is routed, whatever its deployments: the part a topology names per model."""

    policy: str = "latency-first"
    allowed_policies: tuple[str, ...] = ()
    latency_budget_ms: float = Field(0.0, ge=0, description="a cap on predicted latency under every policy")
    priority: str = "balanced"
    score_weights: ScoreWeightsConfig | None = Field(None, description="scored: replaces the priority preset")
    typical_output_tokens: int = Field(
        256, ge=1, description="answer length assumed for a request without max_tokens until answers are seen")
    locality_margin: float = Field(
        0.2, ge=0, le=10, description="a remote deployment ranks as if its predicted latency were this much higher "
        "(0.2 = 20 %): traffic stays in its region unless another is clearly faster")
    fallbacks: tuple[str, ...] = ()
    cache: CacheConfig = CacheConfig()
    breaker: BreakerConfig = BreakerConfig()
    local_ratio: float = Field(1.0, ge=0, le=1)
    client_limits: RateLimitsConfig = Field(RateLimitsConfig(), description="per client API key")
    queue: QueueConfig = QueueConfig()
    saturation: SaturationConfig = SaturationConfig()

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; expected one of {', '.join(POLICIES)}")
        return value

    @field_validator("allowed_policies")
    @classmethod
    def _known_policies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; expected any of {', '.join(POLICIES)}")
        return value

    @field_validator("priority")
    @classmethod
    def _known_priority(cls, value: str) -> str:
        if value not in PRIORITY_PRESETS:
            raise ValueError(f"unknown priority {value!r}; expected one of {', '.join(PRIORITY_PRESETS)}")
        return value


class ModelConfig(RoutingDefaults):
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_deployment_names(self) -> ModelConfig:
        names = [d.name for d in self.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployment names must be unique within a model, repeated: {duplicates}")
        return self


def deployment_url(deployment: DeploymentConfig, region: str | None = None) -> str:
    """The URL routers of `region` call: its `urls_by_region` entry, else `url`."""
    chosen = deployment.urls_by_region.get(region, deployment.url) if region is not None else deployment.url
    return str(chosen).rstrip("/")


def deployment_proto(deployment: DeploymentConfig, region: str | None = None) -> routing_pb2.Deployment:
    return routing_pb2.Deployment(
        name=deployment.name,
        url=deployment_url(deployment, region),
        served_model=deployment.served_model,
        region=deployment.region,
        architecture=deployment.architecture,
        cost_per_1m_input=deployment.cost_per_1m_input,
        cost_per_1m_output=deployment.cost_per_1m_output,
        quality=deployment.quality,
        max_concurrency=deployment.max_concurrency,
        api_key_env=deployment.api_key_env or "",
        weight=deployment.weight,
        rpm_limit=deployment.rpm_limit,
        tpm_limit=deployment.tpm_limit,
        context_window=deployment.context_window,
        chat_continuation=deployment.chat_continuation or "",
    )


def model_route_proto(name: str, model: ModelConfig, region: str | None = None) -> routing_pb2.ModelRoute:
    """The routing-table entry of a model as routers of `region` see it (None: every deployment's `url`)."""
    return routing_pb2.ModelRoute(
        model=name,
        policy=model.policy,
        allowed_policies=model.allowed_policies,
        latency_budget_ms=model.latency_budget_ms,
        priority=model.priority,
        fallbacks=model.fallbacks,
        deployments=[deployment_proto(d, region) for d in model.deployments],
        cache=routing_pb2.CacheSettings(enabled=model.cache.enabled, ttl_s=model.cache.ttl_s),
        breaker=routing_pb2.BreakerSettings(**model.breaker.model_dump()),
        local_ratio=model.local_ratio,
        score_weights=(routing_pb2.ScoreWeights(**model.score_weights.model_dump())
                       if model.score_weights is not None else None),
        typical_output_tokens=model.typical_output_tokens,
        locality_margin=model.locality_margin,
        client_limits=(routing_pb2.RateLimits(rpm=model.client_limits.rpm, tpm=model.client_limits.tpm)
                       if model.client_limits.rpm or model.client_limits.tpm else None),
        queue_size=model.queue.size,
        queue_timeout_s=model.queue.timeout_s,
        saturation=routing_pb2.SaturationSettings(**model.saturation.model_dump()),
    )
