from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EngineFigures(_message.Message):
    __slots__ = ("requests_running", "requests_waiting", "kv_cache_usage", "generation_tokens_per_s", "prefix_cache_hit_rate", "observed_at_unix_ms")
    REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREFIX_CACHE_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float
    generation_tokens_per_s: float
    prefix_cache_hit_rate: float
    observed_at_unix_ms: int
    def __init__(self, requests_running: _Optional[float] = ..., requests_waiting: _Optional[float] = ..., kv_cache_usage: _Optional[float] = ..., generation_tokens_per_s: _Optional[float] = ..., prefix_cache_hit_rate: _Optional[float] = ..., observed_at_unix_ms: _Optional[int] = ...) -> None: ...
