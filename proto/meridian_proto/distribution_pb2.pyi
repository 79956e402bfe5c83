from meridian_proto import routing_pb2 as _routing_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouterHello(_message.Message):
    __slots__ = ("router_id", "region", "version_held", "url", "cluster_id_held")
    ROUTER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_HELD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_HELD_FIELD_NUMBER: _ClassVar[int]
    router_id: str
    region: str
    version_held: int
    url: str
    cluster_id_held: int
    def __init__(self, router_id: _Optional[str] = ..., region: _Optional[str] = ..., version_held: _Optional[int] = ..., url: _Optional[str] = ..., cluster_id_held: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("version", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    reason: str
    def __init__(self, version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("hello", "ack", "nack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    hello: RouterHello
    ack: Ack
    nack: Nack
    def __init__(self, hello: _Optional[_Union[RouterHello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("table", "replica_id", "newest_in_cluster")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    NEWEST_IN_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    table: _routing_pb2.RoutingTable
    replica_id: str
    newest_in_cluster: bool
    def __init__(self, table: _Optional[_Union[_routing_pb2.RoutingTable, _Mapping]] = ..., replica_id: _Optional[str] = ..., newest_in_cluster: _Optional[bool] = ...) -> None: ...
