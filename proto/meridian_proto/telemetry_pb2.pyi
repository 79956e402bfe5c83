from meridian_proto import engine_pb2 as _engine_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Histogram(_message.Message):
    __slots__ = ("bounds_ms", "counts", "sum_ms", "count")
    BOUNDS_MS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUM_MS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bounds_ms: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    sum_ms: float
    count: int
    def __init__(self, bounds_ms: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ..., sum_ms: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class TelemetrySample(_message.Message):
    __slots__ = ("router_id", "region", "model", "deployment", "deployment_region", "window_start_unix_ms", "window_end_unix_ms", "requests", "errors", "latency", "ttft", "tpot", "input_tokens", "output_tokens", "in_flight", "breaker_state", "table_version", "queue_depth", "queue_wait_p95_ms", "dropped_samples", "architecture", "engine")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_REGION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TTFT_FIELD_NUMBER: _ClassVar[int]
    TPOT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    region: str
    model: str
    deployment: str
    deployment_region: str
    window_start_unix_ms: int
    window_end_unix_ms: int
    requests: int
    errors: int
    latency: Histogram
    ttft: Histogram
    tpot: Histogram
    input_tokens: int
    output_tokens: int
    in_flight: int
    breaker_state: str
    table_version: int
    queue_depth: int
    queue_wait_p95_ms: float
    dropped_samples: int
    architecture: str
    engine: _engine_pb2.EngineFigures
    def __init__(self, router_id: _Optional[str] = ..., region: _Optional[str] = ..., model: _Optional[str] = ..., deployment: _Optional[str] = ..., deployment_region: _Optional[str] = ..., window_start_unix_ms: _Optional[int] = ..., window_end_unix_ms: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., latency: _Optional[_Union[Histogram, _Mapping]] = ..., ttft: _Optional[_Union[Histogram, _Mapping]] = ..., tpot: _Optional[_Union[Histogram, _Mapping]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., in_flight: _Optional[int] = ..., breaker_state: _Optional[str] = ..., table_version: _Optional[int] = ..., queue_depth: _Optional[int] = ..., queue_wait_p95_ms: _Optional[float] = ..., dropped_samples: _Optional[int] = ..., architecture: _Optional[str] = ..., engine: _Optional[_Union[_engine_pb2.EngineFigures, _Mapping]] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[TelemetrySample]
    def __init__(self, samples: _Optional[_Iterable[_Union[TelemetrySample, _Mapping]]] = ...) -> None: ...
