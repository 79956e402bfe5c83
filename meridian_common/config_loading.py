"""Loads YAML config files: `${VAR}` / `${VAR:-default}` interpolation, then typed validation.

Every error names the file, the path of the field and what was expected, so that an operator can fix
the file without reading code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used: `source` names the file, `path` the field."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


class FieldReferenceError(ValueError):
    """Raised by a model validator for a field other than the one it validates (a cross-reference that does
    not resolve, say): `validate` reports it at `path` instead of at the validator's place."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def _format_path(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def interpolate(value: Any, environ: Mapping[str, str], source: str, path: tuple[str | int, ...] = ()) -> Any:
    """Replaces `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(source, _format_path(path), f"environment variable {name} is not set "
                              f"and has no default (write ${{{name}:-default}} to give one)")

        return _VARIABLE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: interpolate(v, environ, source, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, source, (*path, i)) for i, v in enumerate(value)]
    return value


def load_yaml(path: str | Path, environ: Mapping[str, str] | None = None) -> Any:
    """Reads and interpolates a YAML file; a YAML value that was interpolated is re-read as YAML
    scalars would be (so `port: ${PORT:-8080}` is an int)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(source, "", f"cannot read the file: {error.strerror or error}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, "", f"not valid YAML: {error}") from error
    return _retype(interpolate(document, os.environ if environ is None else environ, source))


def _retype(value: Any) -> Any:
    if isinstance(value, str) and value and value.strip() == value:
        try:
            reparsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return reparsed if isinstance(reparsed, int | float | bool) else value
    if isinstance(value, dict):
        return {k: _retype(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_retype(v) for v in value]
    return value


def validate(model: type[Model], document: Any, source: str) -> Model:
    """Validates a parsed document into a frozen pydantic model; the first error becomes a
    ConfigError with the field's path."""
    try:
        return model.model_validate(document if document is not None else {})
    except ValidationError as error:
        first = error.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, FieldReferenceError):
            raise ConfigError(source, cause.path, cause.message) from error
        expected = first["msg"]
        if first["type"] == "extra_forbidden":
            expected = "unknown field (check its spelling against docs/)"
        raise ConfigError(source, _format_path(tuple(first["loc"])), expected) from error


def load_config(model: type[Model], path: str | Path, environ: Mapping[str, str] | None = None) -> Model:
    return validate(model, load_yaml(path, environ), str(path))
