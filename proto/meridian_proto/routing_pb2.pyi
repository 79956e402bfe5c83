from meridian_proto import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Deployment(_message.Message):
    __slots__ = ("name", "url", "served_model", "region", "architecture", "cost_per_1m_input", "cost_per_1m_output", "quality", "max_concurrency", "api_key_env", "weight", "added_latency_ms", "ejected", "rpm_limit", "tpm_limit", "error_rate", "reason", "ttft_ms", "tpot_ms", "context_window", "engine", "chat_continuation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1M_INPUT_FIELD_NUMBER: _ClassVar[int]
    COST_PER_1M_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ADDED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    RPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TPM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_WINDOW_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    CHAT_CONTINUATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    served_model: str
    region: str
    architecture: str
    cost_per_1m_input: float
    cost_per_1m_output: float
    quality: float
    max_concurrency: int
    api_key_env: str
    weight: float
    added_latency_ms: float
    ejected: bool
    rpm_limit: int
    tpm_limit: int
    error_rate: float
    reason: str
    ttft_ms: float
    tpot_ms: float
    context_window: int
    engine: _engine_pb2.EngineFigures
    chat_continuation: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., served_model: _Optional[str] = ..., region: _Optional[str] = ..., architecture: _Optional[str] = ..., cost_per_1m_input: _Optional[float] = ..., cost_per_1m_output: _Optional[float] = ..., quality: _Optional[float] = ..., max_concurrency: _Optional[int] = ..., api_key_env: _Optional[str] = ..., weight: _Optional[float] = ..., added_latency_ms: _Optional[float] = ..., ejected: _Optional[bool] = ..., rpm_limit: _Optional[int] = ..., tpm_limit: _Optional[int] = ..., error_rate: _Optional[float] = ..., reason: _Optional[str] = ..., ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., context_window: _Optional[int] = ..., engine: _Optional[_Union[_engine_pb2.EngineFigures, _Mapping]] = ..., chat_continuation: _Optional[str] = ...) -> None: ...

class ScoreWeights(_message.Message):
    __slots__ = ("latency", "cost", "quality", "load")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    latency: float
    cost: float
    quality: float
    load: float
    def __init__(self, latency: _Optional[float] = ..., cost: _Optional[float] = ..., quality: _Optional[float] = ..., load: _Optional[float] = ...) -> None: ...

class BreakerSettings(_message.Message):
    __slots__ = ("error_rate_threshold", "min_requests", "open_duration_s", "window_s", "consecutive_failures", "ttft_p95_threshold_ms", "tpot_p95_threshold_ms", "max_ejection_percent")
    ERROR_RATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_THRESHOLD_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_P95_THRESHOLD_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    error_rate_threshold: float
    min_requests: int
    open_duration_s: float
    window_s: float
    consecutive_failures: int
    ttft_p95_threshold_ms: float
    tpot_p95_threshold_ms: float
    max_ejection_percent: float
    def __init__(self, error_rate_threshold: _Optional[float] = ..., min_requests: _Optional[int] = ..., open_duration_s: _Optional[float] = ..., window_s: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., ttft_p95_threshold_ms: _Optional[float] = ..., tpot_p95_threshold_ms: _Optional[float] = ..., max_ejection_percent: _Optional[float] = ...) -> None: ...

class CacheSettings(_message.Message):
    __slots__ = ("enabled", "ttl_s")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    ttl_s: float
    def __init__(self, enabled: _Optional[bool] = ..., ttl_s: _Optional[float] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("rpm", "tpm")
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    rpm: int
    tpm: int
    def __init__(self, rpm: _Optional[int] = ..., tpm: _Optional[int] = ...) -> None: ...

class ModelRoute(_message.Message):
    __slots__ = ("model", "policy", "allowed_policies", "latency_budget_ms", "priority", "fallbacks", "deployments", "cache", "breaker", "local_ratio", "client_limits", "queue_size", "queue_timeout_s", "score_weights", "typical_output_tokens", "locality_margin", "saturation")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_POLICIES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RATIO_FIELD_NUMBER: _ClassVar[int]
    CLIENT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    SCORE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_MARGIN_FIELD_NUMBER: _ClassVar[int]
    SATURATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    policy: str
    allowed_policies: _containers.RepeatedScalarFieldContainer[str]
    latency_budget_ms: float
    priority: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    deployments: _containers.RepeatedCompositeFieldContainer[Deployment]
    cache: CacheSettings
    breaker: BreakerSettings
    local_ratio: float
    client_limits: RateLimits
    queue_size: int
    queue_timeout_s: float
    score_weights: ScoreWeights
    typical_output_tokens: int
    locality_margin: float
    saturation: SaturationSettings
    def __init__(self, model: _Optional[str] = ..., policy: _Optional[str] = ..., allowed_policies: _Optional[_Iterable[str]] = ..., latency_budget_ms: _Optional[float] = ..., priority: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., deployments: _Optional[_Iterable[_Union[Deployment, _Mapping]]] = ..., cache: _Optional[_Union[CacheSettings, _Mapping]] = ..., breaker: _Optional[_Union[BreakerSettings, _Mapping]] = ..., local_ratio: _Optional[float] = ..., client_limits: _Optional[_Union[RateLimits, _Mapping]] = ..., queue_size: _Optional[int] = ..., queue_timeout_s: _Optional[float] = ..., score_weights: _Optional[_Union[ScoreWeights, _Mapping]] = ..., typical_output_tokens: _Optional[int] = ..., locality_margin: _Optional[float] = ..., saturation: _Optional[_Union[SaturationSettings, _Mapping]] = ...) -> None: ...

class SaturationSettings(_message.Message):
    __slots__ = ("max_requests_waiting", "max_kv_cache_usage")
    MAX_REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    MAX_KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    max_requests_waiting: int
    max_kv_cache_usage: float
    def __init__(self, max_requests_waiting: _Optional[int] = ..., max_kv_cache_usage: _Optional[float] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "epoch", "region", "content_hash", "computed_at_unix_ms", "models", "source", "cluster_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    epoch: int
    region: str
    content_hash: str
    computed_at_unix_ms: int
    models: _containers.RepeatedCompositeFieldContainer[ModelRoute]
    source: str
    cluster_id: int
    def __init__(self, version: _Optional[int] = ..., epoch: _Optional[int] = ..., region: _Optional[str] = ..., content_hash: _Optional[str] = ..., computed_at_unix_ms: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelRoute, _Mapping]]] = ..., source: _Optional[str] = ..., cluster_id: _Optional[int] = ...) -> None: ...
