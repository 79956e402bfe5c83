"""Request JSON read the way Go's `json.NewDecoder(body).Decode` reads it, where Python's json differs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_GO_WHITESPACE = " \t\r\n"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _valid_text(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for key, value in pairs:
        key = _valid_text(key)
        # A repeated key moves to where it last appears: Go assigns fields in document order, the last one staying.
        members.pop(key, None)
        members[key] = value
    return members


def _strings_valid(value: Any) -> Any:
    if isinstance(value, str):
        return _valid_text(value)
    if isinstance(value, list):
        return [_strings_valid(item) for item in value]
    if isinstance(value, dict):
        return {key: _strings_valid(item) for key, item in value.items()}
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_object)


def decode(raw: bytes) -> Any:
    """The first JSON value of `raw`; ValueError when there is none ("EOF" for a blank body, as Go says).

    Like Go: what follows the first value is never read; NaN and Infinity are not JSON; invalid UTF-8 and
    lone surrogates in strings become U+FFFD instead of failing the request (or, later, its answer).
    """
    text = raw.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_GO_WHITESPACE))
    if start == len(text):
        raise ValueError("EOF")
    try:
        return _strings_valid(_DECODER.raw_decode(text, start)[0])
    except RecursionError as error:
        raise ValueError("exceeded max depth") from error


def fold(key: str) -> str:
    """Go's case folding of an object key, as far as it can make a key equal to an ASCII field name."""
    return key.replace("\u212a", "k").replace("\u017f", "s").lower()


def values(doc: Mapping[str, Any], name: str) -> list[Any]:
    """What Go decodes into the field `name`, in document order: every non-null value under a key equal to
    `name` ignoring case (the last one stays). Go leaves a field untouched for a null."""
    return [value for key, value in doc.items() if value is not None and fold(key) == name]
