"""Toxiproxy's API bodies, without I/O: request JSON parsed into frozen values, values shaped into JSON.

Follows Go's encoding/json as Toxiproxy uses it: keys match field names ignoring case, unknown keys and nulls are
ignored (a null body too), a wrong type is "bad request body: ...", missing names are "missing required field: ...".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from regions.toxiproxy import go_json
from regions.toxiproxy.api_error import (
    BAD_REQUEST_BODY,
    INVALID_STREAM,
    INVALID_TOXIC_TYPE,
    MISSING_FIELD,
    TOXIC_ALREADY_EXISTS,
    ApiError,
)
from regions.toxiproxy.toxics import REGISTRY, Toxic
from regions.toxiproxy.toxics.toxic import attributes_from_json, attributes_to_json

STREAMS = ("upstream", "downstream")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyInput:
    name: str
    listen: str
    upstream: str
    enabled: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ToxicSpec:
    name: str
    type: str
    stream: str  # as the client wrote it; Toxiproxy matches it case-insensitively
    toxicity: float
    toxic: Toxic

    @property
    def direction(self) -> str:
        return self.stream.lower()


def parse_body(raw: bytes) -> Any:
    try:
        return go_json.decode(raw)
    except ValueError as error:
        raise BAD_REQUEST_BODY.joined(str(error)) from error


def _object(doc: Any, where: str) -> Mapping[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise BAD_REQUEST_BODY.joined(f"{where}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _field(doc: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    value = default
    for found in go_json.values(doc, name):
        if kind is float and isinstance(found, int) and not isinstance(found, bool):
            try:
                found = float(found)
            except OverflowError:
                raise BAD_REQUEST_BODY.joined(f"{name}: {found} overflows a number") from None
        if not isinstance(found, kind) or (kind is not bool and isinstance(found, bool)):
            raise BAD_REQUEST_BODY.joined(f"{name}: expected {kind.__name__}, got {json.dumps(found)}")
        value = found
    return value


def _attributes(body: Mapping[str, Any], toxic_class: type[Toxic], base: Toxic | None) -> Toxic:
    # Go decodes every "attributes" key (in any case) into the same toxic, one after the other.
    toxic = base if base is not None else attributes_from_json(toxic_class, None)
    for raw in go_json.values(body, "attributes"):
        toxic = attributes_from_json(toxic_class, raw, base=toxic)
    return toxic


def parse_proxy_create(doc: Any) -> ProxyInput:
    body = _object(doc, "proxy")
    proxy = ProxyInput(
        name=_field(body, "name", str, ""),
        listen=_field(body, "listen", str, ""),
        upstream=_field(body, "upstream", str, ""),
        enabled=_field(body, "enabled", bool, True),
    )
    if not proxy.name:
        raise MISSING_FIELD.joined("name")
    if not proxy.upstream:
        raise MISSING_FIELD.joined("upstream")
    return proxy


def parse_proxy_update(doc: Any, current: ProxyInput) -> ProxyInput:
    """The fields not in the body keep the proxy's current values (its actual listen address included)."""
    body = _object(doc, "proxy")
    return dataclasses.replace(
        current,
        listen=_field(body, "listen", str, current.listen),
        upstream=_field(body, "upstream", str, current.upstream),
        enabled=_field(body, "enabled", bool, current.enabled),
    )


def parse_populate(doc: Any) -> list[ProxyInput]:
    """Validates every proxy before any is created, as Toxiproxy does: the whole array is decoded (a wrong type
    anywhere is a bad body) before any proxy's required fields are checked."""
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise BAD_REQUEST_BODY.joined(f"populate: expected a JSON array of proxies, got {type(doc).__name__}")
    proxies = []
    for index, item in enumerate(doc, start=1):
        body = _object(item, f"proxy {index}")
        proxies.append(ProxyInput(
            name=_field(body, "name", str, ""),
            listen=_field(body, "listen", str, ""),
            upstream=_field(body, "upstream", str, ""),
            enabled=_field(body, "enabled", bool, True),
        ))
    for index, proxy in enumerate(proxies, start=1):
        if not proxy.name:
            raise MISSING_FIELD.joined(f"name at proxy {index}")
        if not proxy.upstream:
            raise MISSING_FIELD.joined(f"upstream at proxy {index}")
    return proxies


def _probability(toxicity: float) -> float:
    # Stricter than Toxiproxy, which stores any number; checked last so that every answer Toxiproxy gives comes first.
    if not 0.0 <= toxicity <= 1.0:
        raise BAD_REQUEST_BODY.joined(f"toxicity: must be between 0 and 1, got {toxicity}")
    return toxicity


def parse_toxic_create(doc: Any, existing_names: Collection[str]) -> ToxicSpec:
    """Checks in Toxiproxy's order (AddToxicJson): the body's fields, stream, type, duplicate name, then the
    type's attributes."""
    body = _object(doc, "toxic")
    stream = _field(body, "stream", str, "downstream")
    toxicity = _field(body, "toxicity", float, 1.0)
    type_name = _field(body, "type", str, "")
    name = _field(body, "name", str, "")
    # Go's first pass decodes "attributes" into an empty struct: its values wait, but it must be an object.
    for raw in go_json.values(body, "attributes"):
        _object(raw, "attributes")
    if stream.lower() not in STREAMS:
        raise INVALID_STREAM
    if not name:
        name = f"{type_name}_{stream}"
    toxic_class = REGISTRY.get(type_name)
    if toxic_class is None:
        raise INVALID_TOXIC_TYPE
    if name in existing_names:
        raise TOXIC_ALREADY_EXISTS
    toxic = _attributes(body, toxic_class, None)
    return ToxicSpec(name=name, type=type_name, stream=stream, toxicity=_probability(toxicity), toxic=toxic)


def parse_toxic_update(doc: Any, current: ToxicSpec) -> ToxicSpec:
    """Only attributes and toxicity change; attributes not in the body keep their values."""
    body = _object(doc, "toxic")
    toxicity = _field(body, "toxicity", float, current.toxicity)
    toxic = _attributes(body, type(current.toxic), current.toxic)
    return dataclasses.replace(current, toxicity=_probability(toxicity), toxic=toxic)


def _number(value: float) -> float | int:
    # Go prints a float32 1.0 as `1`; keep the bodies byte-compatible where it is free.
    return int(value) if value.is_integer() else value


def toxic_json(spec: ToxicSpec) -> dict[str, Any]:
    return {
        "attributes": attributes_to_json(spec.toxic),
        "name": spec.name,
        "type": spec.type,
        "stream": spec.stream,
        "toxicity": _number(spec.toxicity),
    }


def toxics_in_api_order(specs: Sequence[ToxicSpec]) -> list[ToxicSpec]:
    """Toxiproxy lists upstream toxics first, then downstream, each in the order they were added."""
    return [spec for stream in STREAMS for spec in specs if spec.direction == stream]


def proxy_json(proxy: ProxyInput, toxics: Sequence[ToxicSpec]) -> dict[str, Any]:
    return {
        "name": proxy.name,
        "listen": proxy.listen,
        "upstream": proxy.upstream,
        "enabled": proxy.enabled,
        # Toxiproxy's Proxy struct has an exported, untagged zerolog Logger: Go encodes it as an empty object.
        "Logger": {},
        "toxics": [toxic_json(spec) for spec in toxics_in_api_order(toxics)],
    }


def populate_json(proxies: Sequence[dict[str, Any]], error: ApiError | None) -> dict[str, Any]:
    # Go marshals an empty result slice as null.
    listed: list[dict[str, Any]] | None = list(proxies) or None
    return {**(error.to_json() if error else {}), "proxies": listed}
