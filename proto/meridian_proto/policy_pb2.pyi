from meridian_proto import routing_pb2 as _routing_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelPolicy(_message.Message):
    __slots__ = ("region", "model", "policy", "latency_budget_ms", "priority", "score_weights", "max_error_rate", "client_limits", "local_ratio", "allowed_policies", "deployment_weights", "deployment_limits", "max_ttft_p95_ms", "max_tpot_p95_ms")
    class DeploymentWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RATIO_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_POLICIES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_LIMITS_FIELD_NUMBER: _ClassVar[int]
    MAX_TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_TPOT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    region: str
    model: str
    policy: str
    latency_budget_ms: float
    priority: str
    score_weights: _routing_pb2.ScoreWeights
    max_error_rate: float
    client_limits: _routing_pb2.RateLimits
    local_ratio: float
    allowed_policies: _containers.RepeatedScalarFieldContainer[str]
    deployment_weights: _containers.ScalarMap[str, float]
    deployment_limits: _routing_pb2.RateLimits
    max_ttft_p95_ms: float
    max_tpot_p95_ms: float
    def __init__(self, region: _Optional[str] = ..., model: _Optional[str] = ..., policy: _Optional[str] = ..., latency_budget_ms: _Optional[float] = ..., priority: _Optional[str] = ..., score_weights: _Optional[_Union[_routing_pb2.ScoreWeights, _Mapping]] = ..., max_error_rate: _Optional[float] = ..., client_limits: _Optional[_Union[_routing_pb2.RateLimits, _Mapping]] = ..., local_ratio: _Optional[float] = ..., allowed_policies: _Optional[_Iterable[str]] = ..., deployment_weights: _Optional[_Mapping[str, float]] = ..., deployment_limits: _Optional[_Union[_routing_pb2.RateLimits, _Mapping]] = ..., max_ttft_p95_ms: _Optional[float] = ..., max_tpot_p95_ms: _Optional[float] = ...) -> None: ...

class PolicyDocument(_message.Message):
    __slots__ = ("version", "models", "author", "applied_at_unix_ms", "comment")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    version: int
    models: _containers.RepeatedCompositeFieldContainer[ModelPolicy]
    author: str
    applied_at_unix_ms: int
    comment: str
    def __init__(self, version: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ModelPolicy, _Mapping]]] = ..., author: _Optional[str] = ..., applied_at_unix_ms: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class ApplyPolicyRequest(_message.Message):
    __slots__ = ("yaml", "dry_run", "author")
    YAML_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    dry_run: bool
    author: str
    def __init__(self, yaml: _Optional[str] = ..., dry_run: _Optional[bool] = ..., author: _Optional[str] = ...) -> None: ...

class SetPolicyFieldRequest(_message.Message):
    __slots__ = ("changes", "dry_run", "author")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    changes: ModelPolicy
    dry_run: bool
    author: str
    def __init__(self, changes: _Optional[_Union[ModelPolicy, _Mapping]] = ..., dry_run: _Optional[bool] = ..., author: _Optional[str] = ...) -> None: ...

class PolicyResponse(_message.Message):
    __slots__ = ("document", "diff", "applied")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    document: PolicyDocument
    diff: str
    applied: bool
    def __init__(self, document: _Optional[_Union[PolicyDocument, _Mapping]] = ..., diff: _Optional[str] = ..., applied: _Optional[bool] = ...) -> None: ...

class ShowPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[PolicyDocument]
    def __init__(self, documents: _Optional[_Iterable[_Union[PolicyDocument, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("version", "author")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    version: int
    author: str
    def __init__(self, version: _Optional[int] = ..., author: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("id", "pid", "admin", "grpc", "role", "epoch")
    ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    GRPC_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    id: str
    pid: int
    admin: str
    grpc: str
    role: str
    epoch: int
    def __init__(self, id: _Optional[str] = ..., pid: _Optional[int] = ..., admin: _Optional[str] = ..., grpc: _Optional[str] = ..., role: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class RouterStatus(_message.Message):
    __slots__ = ("router_id", "region", "url", "version", "age_s", "replica_id", "last_nack")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    region: str
    url: str
    version: int
    age_s: float
    replica_id: str
    last_nack: str
    def __init__(self, router_id: _Optional[str] = ..., region: _Optional[str] = ..., url: _Optional[str] = ..., version: _Optional[int] = ..., age_s: _Optional[float] = ..., replica_id: _Optional[str] = ..., last_nack: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("leader", "replicas", "routers", "tables")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ROUTERS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    leader: ReplicaStatus
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    routers: _containers.RepeatedCompositeFieldContainer[RouterStatus]
    tables: _containers.RepeatedCompositeFieldContainer[_routing_pb2.RoutingTable]
    def __init__(self, leader: _Optional[_Union[ReplicaStatus, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., routers: _Optional[_Iterable[_Union[RouterStatus, _Mapping]]] = ..., tables: _Optional[_Iterable[_Union[_routing_pb2.RoutingTable, _Mapping]]] = ...) -> None: ...
