"""The control plane's config file: defaults, catalog cross-references, errors naming file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from control_plane.config import (
    ControlPlaneConfig,
    TlsConfig,
    default_replica_id,
    load_control_plane_config,
    plaintext_allowed,
)
from meridian_common.config_loading import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "control-plane.md"

MINIMAL = """regions:
  eu-west: {rtt_ms: {us-east: 80}}
  us-east: {}
models:
  llama:
    deployments:
      - {name: a, url: "http://127.0.0.1:9100/v1", served_model: llama, region: eu-west}
      - {name: b, url: "http://127.0.0.1:9101/v1", served_model: llama, region: us-east}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "control-plane.yaml"
    path.write_text(text)
    return path


def _docs_example() -> str:
    section = DOCS.read_text().split("## Config file", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match
    return match.group(1)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load_control_plane_config(_write(tmp_path, _docs_example()))
    assert config.replica_id == "cp-1" and config.admin.token_env == "MERIDIAN_ADMIN_TOKEN"
    assert config.rtt_ms("ap-south", "eu-west") == 120 and config.rtt_ms("ap-south", "us-east") == 200
    assert {d.region for d in config.models["llama-3.3-70b"].deployments} == set(config.regions)


def test_defaults(tmp_path: Path) -> None:
    config = load_control_plane_config(_write(tmp_path, MINIMAL))
    assert config.replica_id is None
    assert (config.lease_ttl_s, config.tick_s, config.telemetry_window_s) == (3, 1, 10)
    assert config.etcd.prefix == "/meridian" and config.etcd.endpoints == ("http://127.0.0.1:2379",)
    assert (config.grpc.host, config.admin.host) == ("127.0.0.1", "127.0.0.1")
    assert not config.tls.enabled
    assert config.rtt_ms("eu-west", "us-east") == config.rtt_ms("us-east", "eu-west") == 80
    assert config.rtt_ms("eu-west", "eu-west") == 0


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_control_plane_config(_write(tmp_path, MINIMAL))
    with pytest.raises(ValueError):
        config.tick_s = 5  # type: ignore[misc]


def _edit(document: dict, dotted: str, value: object) -> dict:
    *parents, last = dotted.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value", "path", "expected"),
    [
        ("regions.eu-west.rtt_ms.mars", 10, "regions.eu-west.rtt_ms.mars", "unknown region 'mars'"),
        ("regions.eu-west.rtt_ms.us-east", -1, "regions.eu-west.rtt_ms.us-east", ">= 0"),
        ("regions.eu-west.rtt_ms", {}, "regions.eu-west.rtt_ms", "no RTT to 'us-east'"),
        ("regions.us-east.rtt_ms", {"eu-west": 90}, "regions.eu-west.rtt_ms.us-east", "symmetric"),
        ("regions.eu-west.rtt_ms.eu-west", 5, "regions.eu-west.rtt_ms.eu-west", "to itself is 0"),
        ("models.llama.deployments.1.region", "us-eats", "models.llama.deployments.1.region",
         "unknown region 'us-eats'"),
        ("models.llama.fallbacks", ["nope"], "models.llama.fallbacks", "another catalog model"),
        ("models.llama.policy", "fastest", "models.llama.policy", "unknown policy"),
        ("lease_ttl", 3, "lease_ttl", "unknown field"),
        ("grpc.host", "0.0.0.0", "grpc.host", "not a loopback address"),
        ("admin.host", "10.1.2.3", "admin.host", "tls.allow_plaintext"),
        ("admin.token_env", "not a name", "admin.token_env", "pattern"),
        ("tls.cert_file", "/etc/cp.pem", "tls", "cert_file and key_file go together"),
        ("tls.require_client_cert", True, "tls", "ca_file"),
        ("etcd.endpoints", ["127.0.0.1:2379"], "etcd.endpoints", "http://host:port"),
        ("etcd.prefix", "meridian/", "etcd.prefix", "must start with '/'"),
        ("redis_url", "http://x", "redis_url", "redis://"),
        ("redis_url", "redis+sentinel://s1:26379", "redis_url", "/<service name>"),
        ("etcd.call_timeout_s", 0, "etcd.call_timeout_s", "greater than 0"),
        ("telemetry_window_s", 0.5, "telemetry_window_s", "tick_s"),
        ("compute.probe_after_s", 5, "compute.probe_after_s", "telemetry_window_s"),
        ("compute.weight_hysteresis", 0.2, "compute", "below max_weight_step"),
        ("regions", _DELETE, "regions", "Field required"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, field: str, value: object, path: str,
                                    expected: str) -> None:
    document = _edit(yaml.safe_load(MINIMAL), field, value)
    source = _write(tmp_path, yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_control_plane_config(source)
    assert caught.value.source == str(source)
    assert caught.value.path == path
    assert expected in caught.value.message


def test_tls_or_opt_in_allows_a_public_listener(tmp_path: Path) -> None:
    with_tls = _edit(yaml.safe_load(MINIMAL), "tls", {"cert_file": "c.pem", "key_file": "k.pem"})
    _edit(with_tls, "grpc.host", "0.0.0.0")
    assert load_control_plane_config(_write(tmp_path, yaml.safe_dump(with_tls))).tls.enabled
    opted_in = _edit(yaml.safe_load(MINIMAL), "tls", {"allow_plaintext": True})
    _edit(opted_in, "admin.host", "0.0.0.0")
    loaded = load_control_plane_config(_write(tmp_path, yaml.safe_dump(opted_in)))
    assert isinstance(loaded, ControlPlaneConfig) and loaded.admin.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("host", "allow", "expected"),
    [
        ("127.0.0.1", False, True),
        ("127.0.0.53", False, True),
        ("::1", False, True),
        ("[::1]", False, True),
        ("localhost", False, True),
        ("0.0.0.0", False, False),
        ("10.0.0.5", False, False),
        ("cp.example.com", False, False),
        ("0.0.0.0", True, True),
    ],
)
def test_plaintext_allowed(host: str, allow: bool, expected: bool) -> None:
    assert plaintext_allowed(host, TlsConfig(allow_plaintext=allow)) is expected


def test_default_replica_id() -> None:
    assert default_replica_id("cp-host", 4242) == "cp-host-4242"
