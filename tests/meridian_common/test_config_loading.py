"""Config files: interpolation of ${VAR} and ${VAR:-default}, and errors naming file and field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_plane.config import bootstrap_table, load_router_config
from meridian_common.config_loading import ConfigError, interpolate, load_yaml

EXAMPLE = """region: us-east
listen: {host: 127.0.0.1, port: 8080}
models:
  bench-model:                 # the logical model name clients send
    policy: latency-first
    deployments:
      - name: sim-a
        url: http://127.0.0.1:9100/v1
        served_model: bench-model
        region: us-east
        architecture: dense
        cost_per_1m_input: 0.10
        cost_per_1m_output: 0.20
        quality: 0.80
        max_concurrency: 64
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(text)
    return path


def test_the_issue_example_loads_as_shown(tmp_path: Path) -> None:
    config = load_router_config(_write(tmp_path, EXAMPLE))
    table = bootstrap_table(config)
    assert config.listen.port == 8080
    deployment = table.models[0].deployments[0]
    assert (deployment.name, deployment.url, deployment.max_concurrency) == ("sim-a", "http://127.0.0.1:9100/v1", 64)
    assert table.source == "config" and table.version == 0 and len(table.content_hash) == 64


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${HOST}", {"HOST": "10.0.0.1"}, "10.0.0.1"),
        ("http://${HOST:-127.0.0.1}:${PORT:-9100}/v1", {}, "http://127.0.0.1:9100/v1"),
        ("${HOST:-x}", {"HOST": "set"}, "set"),
        ("${EMPTY:-}", {}, ""),
        ("no variables", {}, "no variables"),
    ],
)
def test_interpolation(value: str, environ: dict[str, str], expected: str) -> None:
    assert interpolate(value, environ, "f.yaml") == expected


def test_interpolation_reaches_nested_values_and_retypes_numbers(tmp_path: Path) -> None:
    text = EXAMPLE.replace("port: 8080", "port: \"${ROUTER_PORT:-8181}\"").replace(
        "max_concurrency: 64", "max_concurrency: ${CAP}")
    path = _write(tmp_path, text)
    document = load_yaml(path, {"CAP": "12"})
    assert document["listen"]["port"] == 8181
    assert document["models"]["bench-model"]["deployments"][0]["max_concurrency"] == 12


def test_missing_variable_names_file_and_path(tmp_path: Path) -> None:
    path = _write(tmp_path, EXAMPLE.replace("served_model: bench-model", "served_model: ${SERVED}"))
    with pytest.raises(ConfigError) as caught:
        load_yaml(path, {})
    assert str(path) in str(caught.value)
    assert "models.bench-model.deployments.0.served_model" in str(caught.value)
    assert "SERVED" in str(caught.value)


@pytest.mark.parametrize(
    ("change", "path_fragment", "expected_fragment"),
    [
        (("policy: latency-first", "policy: fastest"), "models.bench-model.policy", "unknown policy"),
        (("quality: 0.80", "quality: 3"), "models.bench-model.deployments.0.quality", "less than or equal"),
        (("url: http://127.0.0.1:9100/v1", "url: not a url"), "deployments.0.url", "URL"),
        (("max_concurrency: 64", "max_concurency: 64"), "deployments.0.max_concurency", "unknown field"),
        (("region: us-east\n", ""), "region", "Field required"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, change: tuple[str, str], path_fragment: str,
                                          expected_fragment: str) -> None:
    path = _write(tmp_path, EXAMPLE.replace(*change, 1))
    with pytest.raises(ConfigError) as caught:
        load_router_config(path)
    message = str(caught.value)
    assert str(path) in message and path_fragment in message and expected_fragment in message


@pytest.mark.parametrize(
    ("extra", "path_fragment", "expected_fragment"),
    [
        ("backend_keys: {env_prefixes: ['']}", "backend_keys.env_prefixes", "an empty prefix would let a table"),
        ("backend_keys: {env_names: [NOT-A-NAME]}", "backend_keys.env_names", "not an environment variable name"),
        ("admin_token_env: MERIDIAN_BACKEND_ADMIN", "admin_token_env", "holds one of this router's own secrets"),
        ("client_api_keys_env: CLIENT_KEYS\nbackend_keys: {env_names: [CLIENT_KEYS]}", "client_api_keys_env",
         "a routing table name it as a backend key"),
        ("jobs: {callback_secret_env: CB_SECRET}\nbackend_keys: {env_prefixes: [CB_]}", "jobs.callback_secret_env",
         "rename the variable or narrow backend_keys"),
    ],
    ids=["empty-prefix", "bad-name", "admin-token-prefixed", "client-keys-listed", "callback-secret-prefixed"],
)
def test_a_table_may_never_name_the_routers_own_secrets(tmp_path: Path, extra: str, path_fragment: str,
                                                         expected_fragment: str) -> None:
    path = _write(tmp_path, EXAMPLE + extra + "\n")
    with pytest.raises(ConfigError) as caught:
        load_router_config(path)
    message = str(caught.value)
    assert path_fragment in message and expected_fragment in message, message


def test_a_secret_named_as_a_backend_key_in_the_models_section_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace("max_concurrency: 64", "max_concurrency: 64\n        api_key_env: ROUTER_ADMIN")
    path = _write(tmp_path, text + "admin_token_env: ROUTER_ADMIN\n")
    with pytest.raises(ConfigError, match="admin_token_env: ROUTER_ADMIN holds one of this router's own secrets"):
        load_router_config(path)


def test_unknown_fallback_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, EXAMPLE.replace("policy: latency-first", "policy: latency-first\n    fallbacks: [nope]"))
    with pytest.raises(ConfigError, match="unknown fallbacks"):
        load_router_config(path)


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_router_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_router_config(_write(tmp_path, "region: [unclosed"))
