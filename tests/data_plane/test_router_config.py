"""The router config: request-body limits (defaults, invalid values refused with the field's path) and redis_url."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_plane.config import MiB, RouterConfig, load_router_config
from meridian_common.catalog import ChatContinuation
from meridian_common.config_loading import ConfigError

MODELS = """models:
  m:
    deployments:
      - {name: a, url: "http://127.0.0.1:9/v1", served_model: m, region: r}
"""


def _load(tmp_path: Path, extra: str) -> RouterConfig:
    path = tmp_path / "router.yaml"
    path.write_text(f"region: r\n{extra}\n{MODELS}")
    return load_router_config(path)


def test_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    bodies = config.request_bodies
    assert (config.max_body_bytes, bodies.in_flight_bytes, bodies.read_timeout_s) == (16 * MiB, 64 * MiB, 30.0)


@pytest.mark.parametrize(("extra", "expected"), [
    ("request_bodies: {in_flight_bytes: 0}", "request_bodies.in_flight_bytes"),
    ("request_bodies: {read_timeout_s: 0}", "request_bodies.read_timeout_s"),
    ("request_bodies: {in_flight: 5}", "request_bodies.in_flight"),
    ("max_body_bytes: 1000\nrequest_bodies: {in_flight_bytes: 999}",
     "request_bodies.in_flight_bytes (999) is below max_body_bytes (1000)"),
])
def test_invalid_body_limits_name_the_field(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, extra)
    assert expected in str(caught.value)


def test_stream_resumption_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    stall = config.stream_stall
    assert (config.max_stream_resumes, config.chat_continuation) == (2, "vllm")
    assert (stall.floor_s, stall.cap_s, stall.tpot_multiple) == (2.0, 15.0, 50.0)


@pytest.mark.parametrize(("extra", "expected"), [
    ("max_stream_resumes: -1", "max_stream_resumes"),
    ("stream_stall: {floor_s: 0}", "stream_stall.floor_s"),
    ("stream_stall: {tpot_multiple: -2}", "stream_stall.tpot_multiple"),
    ("stream_stall: {floor_s: 20, cap_s: 10}", "floor_s (20.0) is above cap_s (10.0)"),
    ("chat_continuation: guess", "chat_continuation"),
])
def test_invalid_stream_resumption_settings_name_the_field(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, extra)
    assert expected in str(caught.value)


def test_a_deployment_may_say_how_it_continues_a_cut_chat_stream(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    deployment = '{name: a, url: "http://127.0.0.1:9/v1", served_model: m, region: r, chat_continuation: %s}'
    path.write_text(f"region: r\nmodels:\n  m:\n    deployments:\n      - {deployment % 'prefill'}\n")
    assert load_router_config(path).models["m"].deployments[0].chat_continuation is ChatContinuation.PREFILL
    path.write_text(f"region: r\nmodels:\n  m:\n    deployments:\n      - {deployment % 'guess'}\n")
    with pytest.raises(ConfigError) as caught:
        load_router_config(path)
    assert "models.m.deployments.0.chat_continuation" in str(caught.value) and "'prefill'" in str(caught.value)


def test_redis_url_takes_sentinels_and_says_what_a_bad_one_lacks(tmp_path: Path) -> None:
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/meridian/0"
    assert _load(tmp_path, f"redis_url: {url}").redis_url == url
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, "redis_url: redis+sentinel://127.0.0.1:26379")
    assert "redis_url" in str(caught.value) and "/<service name>" in str(caught.value)
