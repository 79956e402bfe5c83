"""snapshot_from_proto: the bootstrap table passes, and every kind of bad table is refused with a reason
that names the model, deployment and field."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest

from data_plane.app import key_env_allowlist
from data_plane.config import RouterConfig, bootstrap_table
from data_plane.table.snapshot import InvalidTable, KeyEnvAllowlist, TableSnapshot, snapshot_from_proto
from meridian_common.catalog import BreakerConfig, CacheConfig, ChatContinuation
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

CONFIG = RouterConfig.model_validate({
    "region": "us-east",
    "models": {
        "big": {
            "policy": "cost-first",
            "latency_budget_ms": 800,
            "fallbacks": ["small"],
            "breaker": {"error_rate_threshold": 0.4, "min_requests": 10},
            "cache": {"enabled": True, "ttl_s": 60},
            "deployments": [
                {"name": "a", "url": "http://10.0.0.1:8000/v1/", "served_model": "llama", "region": "us-east",
                 "cost_per_1m_input": 0.1, "cost_per_1m_output": 0.2, "quality": 0.9, "max_concurrency": 8,
                 "api_key_env": "A_KEY"},
                {"name": "b", "url": "https://b.example/v1", "served_model": "llama", "region": "eu-west",
                 "architecture": "moe", "chat_continuation": "prefill"},
            ],
        },
        "small": {"deployments": [
            {"name": "s", "url": "http://10.0.0.2:8000/v1", "served_model": "tiny", "region": "us-east"},
        ]},
    },
})


KEY_ENVS = key_env_allowlist(CONFIG)


def _table() -> routing_pb2.RoutingTable:
    return bootstrap_table(CONFIG, now_unix_ms=1_700_000_000_000)


def _rehashed(table: routing_pb2.RoutingTable) -> routing_pb2.RoutingTable:
    table.content_hash = content_hash(table.models)
    return table


def _model(table: routing_pb2.RoutingTable, name: str = "big") -> routing_pb2.ModelRoute:
    return next(m for m in table.models if m.model == name)


def test_bootstrap_table_passes() -> None:
    snapshot = snapshot_from_proto(_table(), expected_region="us-east", key_envs=KEY_ENVS)
    assert (snapshot.version, snapshot.epoch, snapshot.region, snapshot.source) == (0, 0, "us-east", "config")
    assert snapshot.computed_at_unix_ms == 1_700_000_000_000
    assert list(snapshot.models) == ["big", "small"]
    big = snapshot.models["big"]
    assert (big.policy, big.latency_budget_ms, big.fallbacks, big.priority) == ("cost-first", 800, ("small",),
                                                                                "balanced")
    assert (big.cache_enabled, big.cache_ttl_s, big.local_ratio) == (True, 60.0, 1.0)
    assert big.breaker == BreakerConfig(**{**BreakerConfig().model_dump(), "error_rate_threshold": 0.4,
                                             "min_requests": 10})
    a, b = big.deployments
    assert (a.name, a.url, a.max_concurrency, a.api_key_env, a.quality) == (
        "a", "http://10.0.0.1:8000/v1", 8, "A_KEY", 0.9)
    assert (b.region, b.architecture, b.weight, b.ejected, b.api_key_env) == (
        "eu-west", "moe", 1.0, False, "")
    assert (a.chat_continuation, b.chat_continuation) == (None, ChatContinuation.PREFILL)


def test_unset_breaker_and_cache_take_the_config_defaults() -> None:
    table = _table()
    for model in table.models:
        model.ClearField("breaker")
        model.ClearField("cache")
    snapshot = snapshot_from_proto(_rehashed(table), expected_region="us-east", key_envs=KEY_ENVS)
    small = snapshot.models["small"]
    assert small.breaker == BreakerConfig()
    assert (small.cache_enabled, small.cache_ttl_s) == (CacheConfig().enabled, CacheConfig().ttl_s)


def test_snapshot_is_immutable_and_owns_its_proto() -> None:
    table = _table()
    snapshot = snapshot_from_proto(table, expected_region="us-east", key_envs=KEY_ENVS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.version = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.models["x"] = snapshot.models["big"]  # type: ignore[index]
    table.source = "disk"
    table.models[0].deployments[0].weight = 9.0
    assert snapshot.proto.source == "config"
    assert snapshot.proto.models[0].deployments[0].weight == 1.0
    assert isinstance(snapshot, TableSnapshot)


Mutation = Callable[[routing_pb2.RoutingTable], None]


def _set(path: Callable[[routing_pb2.RoutingTable], object], field: str, value: object) -> Mutation:
    return lambda table: setattr(path(table), field, value)


def _deployment(table: routing_pb2.RoutingTable, index: int = 0) -> routing_pb2.Deployment:
    return _model(table).deployments[index]


def _breaker(table: routing_pb2.RoutingTable) -> routing_pb2.BreakerSettings:
    return _model(table).breaker


def _duplicate_model(table: routing_pb2.RoutingTable) -> None:
    table.models.add().CopyFrom(_model(table, "small"))


def _duplicate_deployment(table: routing_pb2.RoutingTable) -> None:
    _model(table).deployments.add().CopyFrom(_deployment(table, 0))


INVALID: list[tuple[str, Mutation, str]] = [
    ("no deployments", lambda t: _model(t).ClearField("deployments"), "model 'big': has no deployments"),
    ("duplicate model", _duplicate_model, "model 'small' appears more than once"),
    ("duplicate deployment", _duplicate_deployment, "model 'big': deployment name 'a' is repeated"),
    ("empty model name", _set(_model, "model", ""), "empty name"),
    ("unknown policy", _set(_model, "policy", "fastest"), "model 'big': unknown policy 'fastest'"),
    ("empty policy", _set(_model, "policy", ""), "model 'big': unknown policy ''"),
    ("unknown allowed policy", lambda t: _model(t).allowed_policies.append("magic"),
     "model 'big': unknown allowed_policies ['magic']"),
    ("unknown priority", _set(_model, "priority", "vibes"), "model 'big': unknown priority 'vibes'"),
    ("negative budget", _set(_model, "latency_budget_ms", -1.0),
     "latency_budget_ms must be a finite number >= 0"),
    ("local ratio over 1", _set(_model, "local_ratio", 1.5), "local_ratio must be within [0, 1]"),
    ("missing fallback", lambda t: _model(t).fallbacks.append("huge"), "fallback 'huge' is not a model"),
    ("self fallback", lambda t: _model(t).fallbacks.append("big"), "model 'big': names itself as a fallback"),
    ("ftp url", _set(_deployment, "url", "ftp://10.0.0.1/v1"),
     "deployment 'a': url 'ftp://10.0.0.1/v1' is not"),
    ("url without host", _set(_deployment, "url", "http:///v1"), "deployment 'a': url"),
    ("empty deployment name", _set(_deployment, "name", ""), "model 'big': a deployment has an empty name"),
    ("empty served model", _set(_deployment, "served_model", ""), "deployment 'a': served_model is empty"),
    ("empty region", _set(_deployment, "region", ""), "deployment 'a': region is empty"),
    ("negative input cost", _set(_deployment, "cost_per_1m_input", -0.1),
     "deployment 'a': cost_per_1m_input"),
    ("infinite output cost", _set(_deployment, "cost_per_1m_output", math.inf), "cost_per_1m_output"),
    ("nan weight", _set(_deployment, "weight", math.nan), "deployment 'a': weight must be a finite number"),
    ("negative added latency", _set(_deployment, "added_latency_ms", -5.0), "added_latency_ms"),
    ("quality over 1", _set(_deployment, "quality", 1.01), "deployment 'a': quality must be within [0, 1]"),
    ("error rate over 1", _set(_deployment, "error_rate", 2.0), "error_rate must be within [0, 1]"),
    ("zero error threshold", _set(_breaker, "error_rate_threshold", 0.0), "breaker: error_rate_threshold"),
    ("zero min requests", _set(_breaker, "min_requests", 0), "breaker: min_requests must be >= 1"),
    ("zero open duration", _set(_breaker, "open_duration_s", 0.0), "breaker: open_duration_s must be > 0"),
    ("zero window", _set(_breaker, "window_s", 0.0), "breaker: window_s must be > 0"),
    ("negative ttft threshold", _set(_breaker, "ttft_p95_threshold_ms", -1.0), "breaker: ttft_p95_threshold_ms"),
    ("nan tpot threshold", _set(_breaker, "tpot_p95_threshold_ms", math.nan), "breaker: tpot_p95_threshold_ms"),
    ("ejection over 100%", _set(_breaker, "max_ejection_percent", 150.0), "max_ejection_percent must be within"),
    ("negative table ttft", _set(_deployment, "ttft_ms", -1.0), "deployment 'a': ttft_ms"),
    ("negative score weight", lambda t: _model(t).score_weights.CopyFrom(
        routing_pb2.ScoreWeights(latency=-1.0, cost=1.0)), "score_weights: latency must be a finite number"),
    ("all-zero score weights", lambda t: _model(t).score_weights.CopyFrom(routing_pb2.ScoreWeights()),
     "score_weights must have a weight above 0"),
    ("cache without ttl", lambda t: setattr(_model(t).cache, "ttl_s", 0.0), "cache.ttl_s must be > 0"),
    ("unknown chat continuation", _set(_deployment, "chat_continuation", "guess"),
     "deployment 'a': chat_continuation 'guess' is not one of vllm, prefill"),
    ("key variable not allowed", _set(_deployment, "api_key_env", "AWS_SECRET_ACCESS_KEY"),
     "deployment 'a': api_key_env 'AWS_SECRET_ACCESS_KEY' is not a variable this router lets a table name "
     "(allowed: MERIDIAN_BACKEND_*, A_KEY)"),
]


@pytest.mark.parametrize(("mutate", "reason"), [(m, r) for _, m, r in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_tables_are_refused_with_the_reason(mutate: Mutation, reason: str) -> None:
    table = _table()
    mutate(table)
    with pytest.raises(InvalidTable) as raised:
        snapshot_from_proto(_rehashed(table), expected_region="us-east", key_envs=KEY_ENVS)
    assert reason in str(raised.value)


def test_wrong_region_is_refused() -> None:
    with pytest.raises(InvalidTable, match="table is for region 'us-east', this router serves 'eu-west'"):
        snapshot_from_proto(_table(), expected_region="eu-west", key_envs=KEY_ENVS)


def test_content_hash_mismatch_is_refused() -> None:
    table = _table()
    _deployment(table).weight = 5.0  # altered after hashing
    with pytest.raises(InvalidTable, match="content_hash .* does not match the models section"):
        snapshot_from_proto(table, expected_region="us-east", key_envs=KEY_ENVS)


def test_table_without_models_is_refused() -> None:
    table = _table()
    table.ClearField("models")
    with pytest.raises(InvalidTable, match="table has no models"):
        snapshot_from_proto(_rehashed(table), expected_region="us-east", key_envs=KEY_ENVS)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("MERIDIAN_BACKEND_VLLM_KEY", True), ("MERIDIAN_BACKEND_", True), ("A_KEY", True), ("A_KEY_2", False),
     ("MERIDIAN_ADMIN_TOKEN", False), ("HOME", False), ("meridian_backend_x", False)],
)
def test_a_table_may_name_the_prefixed_and_the_configured_variables(name: str, allowed: bool) -> None:
    table = _table()
    _deployment(table, 1).api_key_env = name
    if allowed:
        snapshot = snapshot_from_proto(_rehashed(table), expected_region="us-east", key_envs=KEY_ENVS)
        assert snapshot.models["big"].deployments[1].api_key_env == name
    else:
        with pytest.raises(InvalidTable, match=f"api_key_env {name!r} is not a variable"):
            snapshot_from_proto(_rehashed(table), expected_region="us-east", key_envs=KEY_ENVS)


def test_the_allowlist_comes_from_backend_keys_and_the_models_section() -> None:
    config = RouterConfig.model_validate({
        **CONFIG.model_dump(mode="json"),
        "backend_keys": {"env_prefixes": ["VLLM_", "OLLAMA_"], "env_names": ["OPENAI_API_KEY"]},
    })
    assert key_env_allowlist(config) == KeyEnvAllowlist(("VLLM_", "OLLAMA_"), frozenset({"OPENAI_API_KEY", "A_KEY"}))
    assert key_env_allowlist(config).describe() == "VLLM_*, OLLAMA_*, A_KEY, OPENAI_API_KEY"
    assert KeyEnvAllowlist((), frozenset()).describe() == "none"
