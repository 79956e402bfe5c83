"""Settings validation, at start-up and for run-time changes through `POST /sim/config`."""

from __future__ import annotations

import math
from typing import Any

import pytest

from simulator.profiles import Profile
from simulator.settings import SettingsError, SimulatorSettings, with_runtime_changes


def test_defaults_are_valid() -> None:
    settings = SimulatorSettings()
    assert settings.profile is Profile.DENSE and settings.capacity >= 1 and settings.output_tokens >= 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": " "}, "model"),
        ({"ttft_ms": -1.0}, "ttft_ms"),
        ({"itl_ms": math.nan}, "itl_ms"),
        ({"itl_ms": math.inf}, "itl_ms"),
        ({"capacity": 0}, "capacity"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"output_tokens": 0}, "output_tokens"),
        ({"output_tokens_sigma": -0.1}, "output_tokens_sigma"),
        ({"output_tokens_sigma": math.nan}, "output_tokens_sigma"),
        ({"output_tokens_sigma": 4.5}, "output_tokens_sigma"),
        ({"profile": "transformer"}, "profile"),
        ({"throttle_rate": 1.01}, "throttle_rate"),
        ({"throttle_rate": math.nan}, "throttle_rate"),
        ({"retry_after_s": -1.0}, "retry_after_s"),
        ({"retry_after_s": 3601.0}, "retry_after_s"),
        ({"retry_after_s": math.inf}, "retry_after_s"),
        ({"api_key": " "}, "api_key"),
        ({"prefill_ms_per_1k": -0.5}, "prefill_ms_per_1k"),
        ({"prefill_ms_per_1k": math.nan}, "prefill_ms_per_1k"),
        ({"kv_cache_tokens": 0}, "kv_cache_tokens"),
        ({"prefix_cache_blocks": -1}, "prefix_cache_blocks"),
        ({"prefix_cache_blocks": 10**9}, "prefix_cache_blocks"),
        ({"cut_after_tokens": -1}, "cut_after_tokens"),
        ({"cut_rate": 1.5}, "cut_rate"),
    ],
)
def test_invalid_settings_name_their_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as raised:
        SimulatorSettings(**changes)
    assert raised.value.field == field


def test_runtime_changes_apply_together() -> None:
    changed = with_runtime_changes(SimulatorSettings(), {"error_rate": 1, "ttft_ms": 0, "itl_ms": 2.5,
                                                         "capacity": 3, "profile": "moe", "throttle_rate": 0.5,
                                                         "retry_after_s": 2})
    assert (changed.error_rate, changed.ttft_ms, changed.itl_ms, changed.capacity, changed.profile,
            changed.throttle_rate, changed.retry_after_s) == (1.0, 0.0, 2.5, 3, Profile.MOE, 0.5, 2.0)
    assert with_runtime_changes(changed, {"retry_after_s": None}).retry_after_s is None
    engine = with_runtime_changes(changed, {"prefill_ms_per_1k": 2, "kv_cache_tokens": 4096,
                                            "prefix_cache_blocks": 0})
    assert (engine.prefill_ms_per_1k, engine.kv_cache_tokens, engine.prefix_cache_blocks) == (2.0, 4096, 0)


def test_engine_defaults_keep_typical_requests_fast_and_unblocked() -> None:
    settings = SimulatorSettings()
    assert settings.prefill_ms_per_1k == 10.0 and settings.prefix_cache_blocks == 2048
    assert settings.kv_cache_tokens >= settings.capacity * 16_384


def test_the_api_key_is_never_shown() -> None:
    settings = SimulatorSettings(api_key="sk-secret")
    assert "sk-secret" not in repr(settings)
    view = settings.runtime_view()
    assert view["api_key_required"] is True and "sk-secret" not in str(view)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "(body)"),
        ({"model": "other"}, "model"),
        ({"seed": 3}, "seed"),
        ({"error_rate": True}, "error_rate"),
        ({"error_rate": "0.5"}, "error_rate"),
        ({"error_rate": 2}, "error_rate"),
        ({"capacity": 2.5}, "capacity"),
        ({"capacity": 0}, "capacity"),
        ({"ttft_ms": -5}, "ttft_ms"),
        ({"profile": 3}, "profile"),
        ({"profile": "mamba"}, "profile"),
        ({"itl_ms": 1, "capacity": -1}, "capacity"),
        ({"api_key": "x"}, "api_key"),  # fixed at start
        ({"throttle_rate": None}, "throttle_rate"),
        ({"retry_after_s": "soon"}, "retry_after_s"),
        ({"prefill_ms_per_1k": "fast"}, "prefill_ms_per_1k"),
        ({"prefill_ms_per_1k": -1}, "prefill_ms_per_1k"),
        ({"kv_cache_tokens": 1.5}, "kv_cache_tokens"),
        ({"kv_cache_tokens": 0}, "kv_cache_tokens"),
        ({"prefix_cache_blocks": True}, "prefix_cache_blocks"),
        ({"prefix_cache_blocks": -3}, "prefix_cache_blocks"),
        ({"cut_after_tokens": 2.5}, "cut_after_tokens"),
        ({"cut_rate": -0.1}, "cut_rate"),
    ],
)
def test_invalid_runtime_changes_are_refused_whole(body: object, field: str) -> None:
    before = SimulatorSettings()
    with pytest.raises(SettingsError) as raised:
        with_runtime_changes(before, body)
    assert raised.value.field == field
    assert field in str(raised.value)


def test_stream_cuts_change_at_run_time() -> None:
    changed = with_runtime_changes(SimulatorSettings(), {"cut_after_tokens": 40, "cut_rate": 0.25})
    assert (changed.cut_after_tokens, changed.cut_rate) == (40, 0.25)
    assert changed.runtime_view()["cut_after_tokens"] == 40 and changed.runtime_view()["cut_rate"] == 0.25
