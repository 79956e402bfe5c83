"""Policy documents: the YAML operators push, turned into the PolicyDocument contract and checked against the
catalog. A refused document lists every problem at once, each naming its entry, e.g.
`models[2] (eu-west/llama-3.3-70b): unknown policy 'fastest'; expected one of ...`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from control_plane.config import ControlPlaneConfig
from meridian_common.policy_names import POLICIES, PRIORITY_PRESETS
from meridian_proto import policy_pb2, routing_pb2

__all__ = [
    "PolicyError",
    "merge_model_policy",
    "parse_policy_document",
    "policy_diff",
    "policy_from_data",
    "policy_to_yaml",
    "set_field",
    "validate_policy_document",
]

WEIGHT_SUM_TOLERANCE = 1e-6
_UINT32_MAX = 2**32 - 1
_TOP_LEVEL = ("models", "comment")
_FIELDS = (
    "region", "model", "policy", "latency_budget_ms", "priority", "max_error_rate", "max_ttft_p95_ms",
    "max_tpot_p95_ms", "client_limits", "deployment_limits", "local_ratio", "allowed_policies",
    "deployment_weights", "score_weights",
)
# Fields no longer accepted, each with what replaces it and why: a document that still sets one is refused
# rather than silently losing a threshold.
_REPLACED = {
    "max_p95_ms": "use max_ttft_p95_ms and/or max_tpot_p95_ms instead: a whole answer's time grows with the "
                  "answer's length, so a p95 threshold on it ejects deployments for writing long answers",
}
_LIMIT_KEYS = ("rpm", "tpm")
_SCORE_KEYS = ("latency", "cost", "quality", "load")
# `meridian policy set` flags that set one key of a limits message.
_SHORTHANDS = {
    "rpm": ("client_limits", "rpm"),
    "tpm": ("client_limits", "tpm"),
    "deployment_rpm": ("deployment_limits", "rpm"),
    "deployment_tpm": ("deployment_limits", "tpm"),
}


class PolicyError(ValueError):
    """A refused policy document; `problems` lists every reason, each naming its entry."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"policy document refused ({count}):\n" + "\n".join(f"  {p}" for p in self.problems))


def _label(index: int, region: object, model: object) -> str:
    return f"models[{index}] ({region or '?'}/{model or '?'})"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _EntryReader:
    """Converts one YAML entry to a ModelPolicy, noting type and shape problems instead of stopping."""

    def __init__(self, raw: Mapping[str, Any], label: str, problems: list[str]) -> None:
        self.raw = raw
        self.label = label
        self.problems = problems

    def problem(self, message: str) -> None:
        self.problems.append(f"{self.label}: {message}")

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if value is None:
            return ""
        if not isinstance(value, str) or not value:
            self.problem(f"{key} must be a non-empty string, got {value!r}")
            return ""
        return value

    def number(self, key: str) -> float:
        value = self.raw.get(key)
        if value is None:
            return 0.0
        if not _is_number(value):
            self.problem(f"{key} must be a number, got {value!r}")
            return 0.0
        return float(value)

    def texts(self, key: str) -> list[str]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            self.problem(f"{key} must be a list of names, got {value!r}")
            return []
        return list(value)

    def numbers(self, key: str, allowed: Sequence[str] | None = None) -> dict[str, float] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and _is_number(v)
                                                  for k, v in value.items()):
            self.problem(f"{key} must map names to numbers, got {value!r}")
            return None
        if allowed is not None and (unknown := sorted(set(value) - set(allowed))):
            self.problem(f"{key} has unknown keys {unknown}; expected {', '.join(allowed)}")
            return None
        return {k: float(v) for k, v in value.items()}

    def limits(self, key: str) -> policy_pb2.RateLimits | None:
        values = self.numbers(key, _LIMIT_KEYS)
        if values is None:
            return None
        for name, number in values.items():
            if number != int(number) or not 0 <= number <= _UINT32_MAX:
                self.problem(f"{key}.{name} must be a whole number from 0 to {_UINT32_MAX}, got {number:g}")
                return None
        return routing_pb2.RateLimits(**{k: int(v) for k, v in values.items()})

    def entry(self) -> policy_pb2.ModelPolicy:
        unknown = sorted(set(self.raw) - set(_FIELDS), key=str)
        for name in unknown:
            if name in _REPLACED:
                self.problem(f"{name} is no longer supported; {_REPLACED[name]}")
            else:
                self.problem(f"unknown field {name!r}; expected one of {', '.join(_FIELDS)}")
        entry = policy_pb2.ModelPolicy(
            region=self.text("region"),
            model=self.text("model"),
            policy=self.text("policy"),
            latency_budget_ms=self.number("latency_budget_ms"),
            priority=self.text("priority"),
            max_error_rate=self.number("max_error_rate"),
            max_ttft_p95_ms=self.number("max_ttft_p95_ms"),
            max_tpot_p95_ms=self.number("max_tpot_p95_ms"),
            local_ratio=self.number("local_ratio"),
            allowed_policies=self.texts("allowed_policies"),
        )
        for key in ("client_limits", "deployment_limits"):
            limits = self.limits(key)
            if limits is not None:
                getattr(entry, key).CopyFrom(limits)
        weights = self.numbers("deployment_weights")
        if weights is not None:
            entry.deployment_weights.update(weights)
        score = self.numbers("score_weights", _SCORE_KEYS)
        if score is not None:
            entry.score_weights.CopyFrom(routing_pb2.ScoreWeights(**score))
        return entry


def _entry_problems(entry: policy_pb2.ModelPolicy, label: str, catalog: ControlPlaneConfig) -> list[str]:
    """What is wrong with an entry whose types are right: references to the catalog and value ranges."""
    problems: list[str] = []

    def problem(message: str) -> None:
        problems.append(f"{label}: {message}")

    if not entry.region:
        problem("region is required")
    elif entry.region not in catalog.regions:
        problem(f"unknown region {entry.region!r}; expected one of {', '.join(sorted(catalog.regions))}")
    model = catalog.models.get(entry.model)
    if not entry.model:
        problem("model is required")
    elif model is None:
        problem(f"unknown model {entry.model!r}; expected one of {', '.join(sorted(catalog.models))}")
    if entry.policy and entry.policy not in POLICIES:
        problem(f"unknown policy {entry.policy!r}; expected one of {', '.join(POLICIES)}")
    if entry.priority and entry.priority not in PRIORITY_PRESETS:
        problem(f"unknown priority {entry.priority!r}; expected one of {', '.join(PRIORITY_PRESETS)}")
    unknown = [p for p in entry.allowed_policies if p not in POLICIES]
    if unknown:
        problem(f"allowed_policies has unknown policies {unknown}; expected any of {', '.join(POLICIES)}")
    elif model is not None and (not entry.policy or entry.policy in POLICIES):
        policy = entry.policy or model.policy
        allowed = list(entry.allowed_policies) or list(model.allowed_policies)
        if allowed and policy not in allowed:
            problem(f"policy {policy!r} is not among allowed_policies {allowed}")
    for name in ("latency_budget_ms", "max_ttft_p95_ms", "max_tpot_p95_ms"):
        value = getattr(entry, name)
        if not math.isfinite(value) or value < 0:
            problem(f"{name} must be a finite number >= 0 (0 = keep the default), got {value:g}")
    for name, value in (("max_error_rate", entry.max_error_rate), ("local_ratio", entry.local_ratio)):
        if not 0.0 <= value <= 1.0:
            problem(f"{name} must be within [0, 1] (0 = keep the default), got {value:g}")
    if entry.deployment_weights:
        weights = dict(entry.deployment_weights)
        if model is not None:
            known = [d.name for d in model.deployments]
            strangers = sorted(set(weights) - set(known))
            if strangers:
                problem(f"deployment_weights names unknown deployments {strangers}; "
                        f"{entry.model} has {', '.join(known)}")
        problems.extend(f"{label}: {p}" for p in _weight_problems("deployment_weights", weights))
    if entry.HasField("score_weights"):
        score = {k: getattr(entry.score_weights, k) for k in _SCORE_KEYS}
        problems.extend(f"{label}: {p}" for p in _weight_problems("score_weights", score))
    return problems


def _weight_problems(field: str, weights: Mapping[str, float]) -> list[str]:
    negative = sorted(k for k, v in weights.items() if not math.isfinite(v) or v < 0)
    if negative:
        return [f"{field} must be finite and >= 0: {negative}"]
    total = sum(weights.values())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        return [f"{field} must sum to 1, they sum to {total:.6g}"]
    return []


def validate_policy_document(document: policy_pb2.PolicyDocument, catalog: ControlPlaneConfig) -> None:
    """Raises PolicyError listing every problem of `document` against `catalog`; returns when it is usable."""
    _raise_if(_document_problems(list(enumerate(document.models)), catalog))


def _document_problems(
    entries: Sequence[tuple[int, policy_pb2.ModelPolicy]], catalog: ControlPlaneConfig
) -> list[str]:
    problems: list[str] = []
    first_index: dict[tuple[str, str], int] = {}
    for index, entry in entries:
        label = _label(index, entry.region, entry.model)
        problems += _entry_problems(entry, label, catalog)
        key = (entry.region, entry.model)
        if key in first_index:
            problems.append(f"{label}: duplicate of models[{first_index[key]}]; one entry per region/model")
        first_index.setdefault(key, index)
    return problems


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise PolicyError(problems)


def policy_from_data(data: Any, catalog: ControlPlaneConfig) -> policy_pb2.PolicyDocument:
    """A parsed YAML value to a validated PolicyDocument (version, author and time are left to the caller)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError([f"the document must be a mapping with a 'models' list, got {type(data).__name__}"])
    problems = [f"unknown top-level field {k!r}; expected {', '.join(_TOP_LEVEL)}"
                for k in sorted(set(data) - set(_TOP_LEVEL), key=str)]
    raw_models = data.get("models") or []
    comment = data.get("comment") or ""
    if not isinstance(comment, str):
        problems.append(f"comment must be a string, got {comment!r}")
        comment = ""
    if not isinstance(raw_models, list):
        problems.append(f"models must be a list of entries, got {type(raw_models).__name__}")
        raw_models = []
    entries: list[tuple[int, policy_pb2.ModelPolicy]] = []
    for index, raw in enumerate(raw_models):
        if not isinstance(raw, dict):
            problems.append(f"models[{index}]: must be a mapping with region, model and the fields to set")
            continue
        label = _label(index, raw.get("region"), raw.get("model"))
        entries.append((index, _EntryReader(raw, label, problems).entry()))
    problems += _document_problems(entries, catalog)
    # Sorted by entry so that all the problems of one entry read together.
    _raise_if(sorted(problems, key=_entry_order))
    return policy_pb2.PolicyDocument(models=[entry for _, entry in entries], comment=comment)


def _entry_order(problem: str) -> tuple[int, int]:
    if problem.startswith("models["):
        return 1, int(problem[len("models["):problem.index("]")])
    return 0, 0


def parse_policy_document(text: str, catalog: ControlPlaneConfig) -> policy_pb2.PolicyDocument:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError([f"not valid YAML: {error}"]) from error
    return policy_from_data(data, catalog)


def _plain(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _entry_data(entry: policy_pb2.ModelPolicy) -> dict[str, Any]:
    """The set fields of an entry, in the documented order, as YAML-ready values."""
    data: dict[str, Any] = {"region": entry.region, "model": entry.model}
    for key in ("policy", "latency_budget_ms", "priority", "max_error_rate", "max_ttft_p95_ms", "max_tpot_p95_ms"):
        value = getattr(entry, key)
        if value:
            data[key] = _plain(value) if isinstance(value, float) else value
    for key in ("client_limits", "deployment_limits"):
        if entry.HasField(key):
            limits = getattr(entry, key)
            data[key] = {"rpm": limits.rpm, "tpm": limits.tpm}
    if entry.local_ratio:
        data["local_ratio"] = _plain(entry.local_ratio)
    if entry.allowed_policies:
        data["allowed_policies"] = list(entry.allowed_policies)
    if entry.deployment_weights:
        data["deployment_weights"] = {k: _plain(v) for k, v in sorted(entry.deployment_weights.items())}
    if entry.HasField("score_weights"):
        data["score_weights"] = {k: _plain(getattr(entry.score_weights, k)) for k in _SCORE_KEYS}
    return data


def policy_to_yaml(document: policy_pb2.PolicyDocument) -> str:
    """The document as YAML that `parse_policy_document` reads back to the same models and comment."""
    header = []
    if document.version:
        header.append(f"# version {document.version}")
    if document.author:
        header.append(f"# author {document.author}")
    if document.applied_at_unix_ms:
        header.append(f"# applied_at_unix_ms {document.applied_at_unix_ms}")
    data: dict[str, Any] = {}
    if document.comment:
        data["comment"] = document.comment
    data["models"] = [_entry_data(entry) for entry in document.models]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=110)
    return "".join(f"{line}\n" for line in header) + body


def set_field(
    document: policy_pb2.PolicyDocument,
    region: str,
    model: str,
    catalog: ControlPlaneConfig,
    /,
    **changes: Any,
) -> policy_pb2.PolicyDocument:
    """A copy of `document` with the entry of (region, model) changed, validated like a pushed document.

    `changes` use the YAML field names (`policy=`, `latency_budget_ms=`, `client_limits={"rpm": 600}`...)
    plus the shorthands rpm, tpm (client limits), deployment_rpm and deployment_tpm; None removes a field.
    The other parameters are positional-only, so that no name a client sends can collide with them.
    An entry left with no field is dropped. Version, author and time are copied for the caller to restamp.
    """
    replaced = sorted(set(changes) & set(_REPLACED))
    if replaced:
        raise PolicyError([f"{region}/{model}: {name} is no longer supported; {_REPLACED[name]}" for name in replaced])
    unknown = sorted(set(changes) - set(_FIELDS[2:]) - set(_SHORTHANDS))
    if unknown:
        raise PolicyError([f"{region}/{model}: cannot set {unknown}; settable: "
                           f"{', '.join([*_FIELDS[2:], *_SHORTHANDS])}"])
    entries = [_entry_data(entry) for entry in document.models]
    index = next((i for i, e in enumerate(entries) if (e["region"], e["model"]) == (region, model)), None)
    if index is None:
        entries.append({"region": region, "model": model})
        index = len(entries) - 1
    target = entries[index]
    for key, value in changes.items():
        if key in _SHORTHANDS:
            message, part = _SHORTHANDS[key]
            limits = dict(target.get(message) or {})
            if value is None:
                limits.pop(part, None)
            else:
                limits[part] = value
            if limits:
                target[message] = limits
            else:
                target.pop(message, None)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value
    if set(target) == {"region", "model"}:
        del entries[index]
    result = policy_from_data({"models": entries, "comment": document.comment or None}, catalog)
    result.version, result.author = document.version, document.author
    result.applied_at_unix_ms = document.applied_at_unix_ms
    return result


def merge_model_policy(
    document: policy_pb2.PolicyDocument, changes: policy_pb2.ModelPolicy, catalog: ControlPlaneConfig
) -> policy_pb2.PolicyDocument:
    """`set_field` for the admin API's SetPolicyFieldRequest: every set field of `changes` is changed."""
    data = _entry_data(changes)
    region, model = data.pop("region"), data.pop("model")
    return set_field(document, region, model, catalog, **data)


def policy_diff(old: policy_pb2.PolicyDocument, new: policy_pb2.PolicyDocument) -> str:
    """A unified diff of two documents' YAML (without their version headers)."""
    strip = ("version", "author", "applied_at_unix_ms")

    def lines(document: policy_pb2.PolicyDocument) -> list[str]:
        copy = policy_pb2.PolicyDocument()
        copy.CopyFrom(document)
        for name in strip:
            copy.ClearField(name)
        return policy_to_yaml(copy).splitlines()

    diff = list(difflib.unified_diff(lines(old), lines(new), "current", "proposed", lineterm=""))
    return "\n".join(diff) if diff else "no changes"
