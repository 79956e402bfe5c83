"""An immutable, validated snapshot of one region's routing table: what every routing decision reads.

`snapshot_from_proto` checks everything a router relies on before a table is applied, and says exactly
what is wrong (the reason goes back to the control plane in a NACK).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from meridian_common.catalog import (
    BreakerConfig,
    CacheConfig,
    ChatContinuation,
    QueueConfig,
    RoutingDefaults,
    SaturationConfig,
)
from meridian_common.engine_figures import EngineFigures, InvalidEngineFigures
from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

DEFAULT_CACHE_TTL_S = CacheConfig().ttl_s
DEFAULT_QUEUE_TIMEOUT_S = QueueConfig().timeout_s
DEFAULT_TYPICAL_OUTPUT_TOKENS = RoutingDefaults().typical_output_tokens
DEFAULT_SATURATION = SaturationConfig()


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    name: str
    url: str
    served_model: str
    region: str
    architecture: str
    cost_per_1m_input: float
    cost_per_1m_output: float
    quality: float
    max_concurrency: int  # 0 = unlimited
    api_key_env: str  # "" = no key
    weight: float
    added_latency_ms: float
    ejected: bool
    rpm_limit: int
    tpm_limit: int
    error_rate: float
    ttft_ms: float = 0.0  # the control plane's merged median time to first token; 0 = unknown
    tpot_ms: float = 0.0  # the control plane's merged median time per output token; 0 = unknown
    context_window: int = 0  # most tokens (prompt + answer) the deployment accepts; 0 = not declared
    engine: EngineFigures | None = None  # the engine's load as the control plane merged it; None = unknown
    chat_continuation: ChatContinuation | None = None  # how a cut chat stream is continued here; None = the router's


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    policy: str
    allowed_policies: tuple[str, ...]
    latency_budget_ms: float
    priority: str
    fallbacks: tuple[str, ...]
    deployments: tuple[DeploymentSpec, ...]
    cache_enabled: bool
    cache_ttl_s: float
    breaker: BreakerConfig
    local_ratio: float
    client_rpm: int = 0  # per client API key; 0 = no limit
    client_tpm: int = 0
    queue_size: int = 0  # requests that may wait for a slot; 0 = none wait, a full model answers 503 at once
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    score_weights: tuple[float, float, float, float] | None = None  # scored: (latency, cost, quality, load)
    typical_output_tokens: int = DEFAULT_TYPICAL_OUTPUT_TOKENS  # assumed for a request without max_tokens
    locality_margin: float = 0.0  # a remote deployment ranks as if this much slower
    saturation: SaturationConfig = DEFAULT_SATURATION


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    version: int
    epoch: int
    region: str
    content_hash: str
    computed_at_unix_ms: int
    source: str
    models: Mapping[str, ModelSpec]
    proto: routing_pb2.RoutingTable  # a private copy: later changes to the caller's message do not leak in


class InvalidTable(ValueError):
    """The table cannot be applied; the message is the reason sent back in the NACK."""


@dataclass(frozen=True, slots=True)
class KeyEnvAllowlist:
    """The environment variables a table may name as a deployment's `api_key_env`: the router sends that
    variable's value as a bearer token to the deployment's URL, and both come from whoever serves the table."""

    prefixes: tuple[str, ...]
    names: frozenset[str]

    def allows(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)

    def describe(self) -> str:
        allowed = [f"{prefix}*" for prefix in self.prefixes] + sorted(self.names)
        return ", ".join(allowed) or "none"


def snapshot_from_proto(
    table: routing_pb2.RoutingTable, *, expected_region: str, key_envs: KeyEnvAllowlist
) -> TableSnapshot:
    if table.region != expected_region:
        raise InvalidTable(f"table is for region {table.region!r}, this router serves {expected_region!r}")
    expected_hash = content_hash(table.models)
    if table.content_hash != expected_hash:
        raise InvalidTable(
            f"content_hash {table.content_hash[:12]!r} does not match the models section "
            f"(computed {expected_hash[:12]!r}): the table was altered or built inconsistently"
        )
    if not table.models:
        raise InvalidTable("table has no models")
    names = [route.model for route in table.models]
    models: dict[str, ModelSpec] = {}
    for route in table.models:
        if route.model in models:
            raise InvalidTable(f"model {route.model!r} appears more than once")
        models[route.model] = _model_spec(route, names, key_envs)
    copy = routing_pb2.RoutingTable()
    copy.CopyFrom(table)
    return TableSnapshot(
        version=table.version,
        epoch=table.epoch,
        region=table.region,
        content_hash=table.content_hash,
        computed_at_unix_ms=table.computed_at_unix_ms,
        source=table.source,
        models=MappingProxyType(models),
        proto=copy,
    )


def _model_spec(route: routing_pb2.ModelRoute, model_names: list[str], key_envs: KeyEnvAllowlist) -> ModelSpec:
    name = route.model
    if not name:
        raise InvalidTable("a model has an empty name")
    where = f"model {name!r}"
    if route.policy not in POLICIES:
        raise InvalidTable(f"{where}: unknown policy {route.policy!r}; expected one of {', '.join(POLICIES)}")
    unknown = [p for p in route.allowed_policies if p not in POLICIES]
    if unknown:
        raise InvalidTable(
            f"{where}: unknown allowed_policies {unknown}; expected any of {', '.join(POLICIES)}"
        )
    if route.priority not in PRIORITY_PRESETS:
        raise InvalidTable(
            f"{where}: unknown priority {route.priority!r}; expected one of {', '.join(PRIORITY_PRESETS)}"
        )
    _check_at_least(where, "latency_budget_ms", route.latency_budget_ms, 0.0)
    _check_unit(where, "local_ratio", route.local_ratio)
    _check_at_least(where, "queue_timeout_s", route.queue_timeout_s, 0.0)
    _check_at_least(where, "locality_margin", route.locality_margin, 0.0)
    for fallback in route.fallbacks:
        if fallback == name:
            raise InvalidTable(f"{where}: names itself as a fallback")
        if fallback not in model_names:
            raise InvalidTable(f"{where}: fallback {fallback!r} is not a model of this table")
    if not route.deployments:
        raise InvalidTable(f"{where}: has no deployments")
    deployments: list[DeploymentSpec] = []
    seen: set[str] = set()
    for deployment in route.deployments:
        if deployment.name in seen:
            raise InvalidTable(f"{where}: deployment name {deployment.name!r} is repeated")
        seen.add(deployment.name)
        deployments.append(_deployment_spec(where, deployment, key_envs))
    cache_enabled = route.cache.enabled
    cache_ttl_s = route.cache.ttl_s if route.HasField("cache") else DEFAULT_CACHE_TTL_S
    if cache_enabled and not (math.isfinite(cache_ttl_s) and cache_ttl_s > 0):
        raise InvalidTable(f"{where}: cache.ttl_s must be > 0 when the cache is enabled, got {cache_ttl_s}")
    return ModelSpec(
        name=name,
        policy=route.policy,
        allowed_policies=tuple(route.allowed_policies),
        latency_budget_ms=route.latency_budget_ms,
        priority=route.priority,
        fallbacks=tuple(route.fallbacks),
        deployments=tuple(deployments),
        cache_enabled=cache_enabled,
        cache_ttl_s=cache_ttl_s if cache_ttl_s > 0 else DEFAULT_CACHE_TTL_S,
        breaker=_breaker_settings(where, route),
        local_ratio=route.local_ratio,
        client_rpm=route.client_limits.rpm,
        client_tpm=route.client_limits.tpm,
        queue_size=route.queue_size,
        queue_timeout_s=route.queue_timeout_s if route.queue_timeout_s > 0 else DEFAULT_QUEUE_TIMEOUT_S,
        score_weights=_score_weights(where, route),
        typical_output_tokens=route.typical_output_tokens or DEFAULT_TYPICAL_OUTPUT_TOKENS,
        locality_margin=route.locality_margin,
        saturation=_saturation(where, route),
    )


def _saturation(where: str, route: routing_pb2.ModelRoute) -> SaturationConfig:
    if not route.HasField("saturation"):
        return DEFAULT_SATURATION
    settings = route.saturation
    _check_unit(f"{where} saturation", "max_kv_cache_usage", settings.max_kv_cache_usage)
    return SaturationConfig.model_construct(max_requests_waiting=settings.max_requests_waiting,
                                            max_kv_cache_usage=settings.max_kv_cache_usage)


def _score_weights(where: str, route: routing_pb2.ModelRoute) -> tuple[float, float, float, float] | None:
    if not route.HasField("score_weights"):
        return None
    sent = route.score_weights
    weights = (sent.latency, sent.cost, sent.quality, sent.load)
    for field, value in zip(("latency", "cost", "quality", "load"), weights, strict=True):
        _check_at_least(f"{where} score_weights", field, value, 0.0)
    if not sum(weights) > 0:
        raise InvalidTable(f"{where}: score_weights must have a weight above 0, got {weights}")
    return weights


def _deployment_spec(
    model_where: str, deployment: routing_pb2.Deployment, key_envs: KeyEnvAllowlist
) -> DeploymentSpec:
    if not deployment.name:
        raise InvalidTable(f"{model_where}: a deployment has an empty name")
    where = f"{model_where} deployment {deployment.name!r}"
    _check_url(where, deployment.url)
    if deployment.api_key_env and not key_envs.allows(deployment.api_key_env):
        raise InvalidTable(
            f"{where}: api_key_env {deployment.api_key_env!r} is not a variable this router lets a table name "
            f"(allowed: {key_envs.describe()}); give the variable an allowed name, or list it in the router "
            "config's backend_keys"
        )
    for field in ("served_model", "region"):
        if not getattr(deployment, field):
            raise InvalidTable(f"{where}: {field} is empty")
    for field in ("cost_per_1m_input", "cost_per_1m_output", "weight", "added_latency_ms", "ttft_ms", "tpot_ms"):
        _check_at_least(where, field, getattr(deployment, field), 0.0)
    _check_unit(where, "quality", deployment.quality)
    _check_unit(where, "error_rate", deployment.error_rate)
    try:
        chat_continuation = ChatContinuation(deployment.chat_continuation) if deployment.chat_continuation else None
    except ValueError:
        raise InvalidTable(f"{where}: chat_continuation {deployment.chat_continuation!r} is not one of "
                           f"{', '.join(ChatContinuation)}") from None
    engine = None
    if deployment.HasField("engine"):
        try:
            engine = EngineFigures.from_proto(deployment.engine)
        except InvalidEngineFigures as error:
            raise InvalidTable(f"{where}: engine {error}") from None
    return DeploymentSpec(
        name=deployment.name,
        url=deployment.url.rstrip("/"),
        served_model=deployment.served_model,
        region=deployment.region,
        architecture=deployment.architecture or "other",
        cost_per_1m_input=deployment.cost_per_1m_input,
        cost_per_1m_output=deployment.cost_per_1m_output,
        quality=deployment.quality,
        max_concurrency=deployment.max_concurrency,
        api_key_env=deployment.api_key_env,
        weight=deployment.weight,
        added_latency_ms=deployment.added_latency_ms,
        ejected=deployment.ejected,
        rpm_limit=deployment.rpm_limit,
        tpm_limit=deployment.tpm_limit,
        error_rate=deployment.error_rate,
        ttft_ms=deployment.ttft_ms,
        tpot_ms=deployment.tpot_ms,
        context_window=deployment.context_window,
        engine=engine,
        chat_continuation=chat_continuation,
    )


def _breaker_settings(where: str, route: routing_pb2.ModelRoute) -> BreakerConfig:
    if not route.HasField("breaker"):
        return BreakerConfig()
    b = route.breaker
    where = f"{where} breaker"
    if not (0.0 < b.error_rate_threshold <= 1.0):
        raise InvalidTable(f"{where}: error_rate_threshold must be in (0, 1], got {b.error_rate_threshold}")
    for field in ("ttft_p95_threshold_ms", "tpot_p95_threshold_ms"):
        _check_at_least(where, field, getattr(b, field), 0.0)
    if not 0.0 <= b.max_ejection_percent <= 100.0:
        raise InvalidTable(f"{where}: max_ejection_percent must be within [0, 100], got {b.max_ejection_percent}")
    if b.min_requests < 1:
        raise InvalidTable(f"{where}: min_requests must be >= 1, got {b.min_requests}")
    for field in ("open_duration_s", "window_s"):
        value = getattr(b, field)
        if not (math.isfinite(value) and value > 0):
            raise InvalidTable(f"{where}: {field} must be > 0, got {value}")
    # Checked above with the table's own messages, so the catalog's validation is not run twice.
    return BreakerConfig.model_construct(
        error_rate_threshold=b.error_rate_threshold,
        ttft_p95_threshold_ms=b.ttft_p95_threshold_ms,
        tpot_p95_threshold_ms=b.tpot_p95_threshold_ms,
        min_requests=b.min_requests,
        open_duration_s=b.open_duration_s,
        window_s=b.window_s,
        consecutive_failures=b.consecutive_failures,
        max_ejection_percent=b.max_ejection_percent,
    )


def _check_url(where: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise InvalidTable(f"{where}: url {url!r} is not an http(s) URL with a host")


def _check_at_least(where: str, field: str, value: float, minimum: float) -> None:
    # `not >=` also catches NaN.
    if not (value >= minimum and math.isfinite(value)):
        raise InvalidTable(f"{where}: {field} must be a finite number >= {minimum:g}, got {value}")


def _check_unit(where: str, field: str, value: float) -> None:
    if not (0.0 <= value <= 1.0):
        raise InvalidTable(f"{where}: {field} must be within [0, 1], got {value}")
