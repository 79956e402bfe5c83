"""The topology schema: the shipped files load, and every invalid input is refused naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meridian_common.config_loading import ConfigError
from meridian_common.workload import REALISTIC
from regions.topology import DEFAULT_TOPOLOGY, load_topology

REGIONS_DIR = DEFAULT_TOPOLOGY.parent


def _valid() -> dict[str, Any]:
    return {
        "regions": {
            "us-east": {"rtt_ms": {"eu-west": 80}, "backends": [
                {"name": "a", "model": "m", "profile": "dense"},
                {"name": "real", "model": "m", "url": "http://10.0.0.5:8000/v1", "served_model": "llama",
                 "api_key_env": "REAL_KEY"},
            ]},
            "eu-west": {"backends": [{"name": "b", "model": "m", "profile": "linear-attention", "capacity": 2}]},
        },
        "models": {"m": {"policy": "cost-first", "latency_budget_ms": 500}},
        "clients": {"c1": {"region": "eu-west", "requests_per_s": 2}},
    }


def _load(tmp_path: Path, document: dict[str, Any]) -> Any:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return load_topology(path)


@pytest.mark.parametrize("name", ["topology.yaml", "topology-two-regions.yaml"])
def test_shipped_topologies_load(name: str) -> None:
    topology = load_topology(REGIONS_DIR / name)
    assert all(topology.backends_of(model) for model in topology.models)
    assert {c.region for c in topology.clients.values()} == set(topology.regions)


def test_default_topology_has_three_regions_and_a_small_linear_attention_backend() -> None:
    topology = load_topology(DEFAULT_TOPOLOGY)
    assert list(topology.regions) == ["us-east", "eu-west", "ap-south"]
    assert topology.rtt_ms("us-east", "eu-west") == 80
    assert topology.rtt_ms("ap-south", "us-east") == 200
    for region in topology.regions.values():
        profiles = {b.profile for b in region.backends}
        costs = {b.cost_per_1m_input for b in region.backends}
        assert len(region.backends) == 2 and len(profiles) == 2 and len(costs) == 2
    linear = [b for _, b in topology.backends() if b.profile == "linear-attention"]
    assert linear and min(b.max_concurrency for b in linear) <= 8


def test_valid_topology_and_queries(tmp_path: Path) -> None:
    topology = _load(tmp_path, _valid())
    assert topology.rtt_ms("eu-west", "us-east") == 80
    assert topology.rtt_ms("eu-west", "eu-west") == 0
    assert topology.rtt_matrix()["eu-west"] == {"eu-west": 0.0, "us-east": 80.0}
    assert [(r, b.name) for r, b in topology.backends()] == [("us-east", "a"), ("us-east", "real"),
                                                            ("eu-west", "b")]
    real = topology.backends()[1][1]
    assert not real.simulated and real.served_model == "llama"


def test_a_client_has_the_realistic_workload_unless_it_names_its_own(tmp_path: Path) -> None:
    document = _valid()
    document["clients"]["c2"] = {"region": "us-east", "workload": {"answer_tokens_median": 30, "stream_share": 0}}
    topology = _load(tmp_path, document)
    assert topology.clients["c1"].workload == REALISTIC
    assert topology.clients["c2"].workload == REALISTIC.model_copy(update={"answer_tokens_median": 30,
                                                                            "stream_share": 0.0})


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "error_path", "message"),
    [
        ("regions.us-east.rtt_ms.eu-west", -1, "regions.us-east.rtt_ms.eu-west", "finite number >= 0"),
        ("regions.us-east.rtt_ms.eu-wst", 10, "regions.us-east.rtt_ms.eu-wst", "unknown region 'eu-wst'"),
        ("regions.us-east.rtt_ms.eu-west", None, "regions.eu-west.rtt_ms", "no RTT to 'us-east'"),
        ("regions.eu-west.rtt_ms", {"us-east": 90}, "regions.us-east.rtt_ms.eu-west", "symmetric"),
        ("regions.us-east.rtt_ms.us-east", 5, "regions.us-east.rtt_ms.us-east", "to itself is 0"),
        ("regions.us-east.backends.0.model", "nope", "regions.us-east.backends.0.model", "unknown model 'nope'"),
        ("regions.eu-west.backends.0.name", "a", "regions.eu-west.backends.0.name", "already defined"),
        ("regions.us-east.backends.0.profile", "rnn", "regions.us-east.backends.0.profile", "Input should be"),
        ("regions.us-east.backends.0.quality", 1.5, "regions.us-east.backends.0.quality", "less than or equal"),
        ("regions.us-east.backends.0.colour", "red", "regions.us-east.backends.0.colour", "unknown field"),
        ("regions.us-east.backends.1.served_model", None, "regions.us-east.backends.1", "needs served_model"),
        ("regions.us-east.backends.1.ttft_ms", 5, "regions.us-east.backends.1", "simulated backends only"),
        ("regions.us-east.backends.1.prefill_ms_per_1k", 8, "regions.us-east.backends.1", "simulated backends only"),
        ("regions.us-east.backends.0.prefill_ms_per_1k", -1, "regions.us-east.backends.0.prefill_ms_per_1k",
         "greater than or equal to 0"),
        ("regions.us-east.backends.0.kv_cache_tokens", 0, "regions.us-east.backends.0.kv_cache_tokens",
         "greater than or equal to 1"),
        ("regions.us-east.backends.0.prefix_cache_blocks", -1, "regions.us-east.backends.0.prefix_cache_blocks",
         "greater than or equal to 0"),
        ("regions.us-east.backends.0.api_key_env", "K", "regions.us-east.backends.0", "need url"),
        ("regions.us-east.backends.0.profile", "other", "regions.us-east.backends.0", "needs url"),
        ("models.m.policy", "fastest", "models.m.policy", "unknown policy 'fastest'"),
        ("models.m.fallbacks", ["ghost"], "models.m.fallbacks", "fallback 'ghost'"),
        ("models.orphan", {"policy": "weighted"}, "models.orphan", "no backend of any region"),
        ("clients.c1.region", "mars", "clients.c1.region", "unknown region 'mars'"),
        ("clients.c1.requests_per_s", 0, "clients.c1.requests_per_s", "greater than 0"),
        ("clients.c1.workload", {"stream_share": 1.5}, "clients.c1.workload.stream_share", "less than or equal"),
        ("clients.c1.workload", {"answer_tokens_max": 100}, "clients.c1.workload.answer_tokens_max",
         "must be >= answer_tokens_median (200)"),
        ("clients.c1.workload", {"max_tokens": 4}, "clients.c1.workload.max_tokens", "unknown field"),
    ],
)
def test_invalid_topology_names_the_field(tmp_path: Path, path: str, value: Any, error_path: str,
                                          message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _set(_valid(), path, value))
    assert caught.value.source.endswith("topology.yaml")
    assert caught.value.path == error_path
    assert message in caught.value.message


def test_bad_region_name(tmp_path: Path) -> None:
    document = _valid()
    document["regions"]["US East"] = {}
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, document)
    assert caught.value.path == "regions.US East"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")
