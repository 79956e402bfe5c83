"""The router's config file, parsed once at the edge into frozen, validated objects.

The `models` section is the bootstrap routing table: `bootstrap_table()` turns it into the same
protobuf table the control plane streams, so the router has a single way to read a table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from meridian_proto import routing_pb2
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from meridian_common.config_loading import load_config
from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS
from meridian_common.table_hash import content_hash

MiB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class DeploymentConfig(_Frozen):
    name: str = Field(min_length=1)
    url: HttpUrl
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


class BreakerConfig(_Frozen):
    error_rate_threshold: float = Field(0.5, gt=0, le=1)
    p95_threshold_ms: float = Field(0.0, ge=0, description="0 = off")
    min_requests: int = Field(5, ge=1)
    open_duration_s: float = Field(5.0, gt=0)
    window_s: float = Field(10.0, gt=0)


class CacheConfig(_Frozen):
    enabled: bool = False
    ttl_s: float = Field(300.0, gt=0)


class ScoreWeightsConfig(_Frozen):
    latency: float = Field(ge=0)
    cost: float = Field(ge=0)
    quality: float = Field(ge=0)


class ModelConfig(_Frozen):
    policy: str = "latency-first"
    allowed_policies: tuple[str, ...] = ()
    latency_budget_ms: float = Field(0.0, ge=0)
    priority: str = "balanced"
    fallbacks: tuple[str, ...] = ()
    cache: CacheConfig = CacheConfig()
    breaker: BreakerConfig = BreakerConfig()
    local_ratio: float = Field(1.0, ge=0, le=1)
    deployments: tuple[DeploymentConfig, ...] = Field(min_length=1)

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

    @model_validator(mode="after")
    def _unique_deployment_names(self) -> ModelConfig:
        names = [d.name for d in self.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployment names must be unique within a model, repeated: {duplicates}")
        return self


class HealthCheckConfig(_Frozen):
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(2.0, gt=0)
    healthy_after: int = Field(2, ge=1, description="consecutive successful probes to rejoin")
    unhealthy_after: int = Field(2, ge=1, description="consecutive failed probes to leave")


class RouterConfig(_Frozen):
    region: str = Field(min_length=1)
    listen: Listen = Listen()
    router_id: str | None = None
    models: dict[str, ModelConfig] = Field(min_length=1)
    max_body_bytes: int = Field(16 * MiB, gt=0)
    request_timeout_s: float = Field(120.0, gt=0, description="overall deadline of one request")
    connect_timeout_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="deployments tried before giving up")
    client_api_keys_env: str | None = Field(
        None, description="environment variable holding comma-separated client API keys"
    )
    admin_token_env: str | None = Field(None, description="environment variable holding the admin token")
    redis_url: str | None = None
    health_check: HealthCheckConfig = HealthCheckConfig()
    stats_window_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _fallbacks_exist(self) -> RouterConfig:
        for name, model in self.models.items():
            missing = [f for f in model.fallbacks if f not in self.models]
            if missing:
                raise ValueError(f"model {name!r} names unknown fallbacks {missing}")
            if name in model.fallbacks:
                raise ValueError(f"model {name!r} names itself as a fallback")
        return self


def load_router_config(path: str | Path) -> RouterConfig:
    return load_config(RouterConfig, path)


def _deployment_proto(deployment: DeploymentConfig, home_region: str) -> routing_pb2.Deployment:
    return routing_pb2.Deployment(
        name=deployment.name,
        url=str(deployment.url).rstrip("/"),
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
    )


def _model_proto(name: str, model: ModelConfig, region: str) -> routing_pb2.ModelRoute:
    return routing_pb2.ModelRoute(
        model=name,
        policy=model.policy,
        allowed_policies=model.allowed_policies,
        latency_budget_ms=model.latency_budget_ms,
        priority=model.priority,
        fallbacks=model.fallbacks,
        deployments=[_deployment_proto(d, region) for d in model.deployments],
        cache=routing_pb2.CacheSettings(enabled=model.cache.enabled, ttl_s=model.cache.ttl_s),
        breaker=routing_pb2.BreakerSettings(**model.breaker.model_dump()),
        local_ratio=model.local_ratio,
    )


def bootstrap_table(config: RouterConfig, now_unix_ms: int | None = None) -> routing_pb2.RoutingTable:
    """The config file's models as routing table version 0 (any control-plane table is newer)."""
    models = [_model_proto(name, model, config.region) for name, model in sorted(config.models.items())]
    return routing_pb2.RoutingTable(
        version=0,
        epoch=0,
        region=config.region,
        content_hash=content_hash(models),
        computed_at_unix_ms=int(time.time() * 1000) if now_unix_ms is None else now_unix_ms,
        models=models,
        source="config",
    )
