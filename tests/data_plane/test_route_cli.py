"""`meridian route --dry-run`, offline from a config file and against a running router."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml


def _route(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meridian_cli.main", "route", "--dry-run", *args],
                          capture_output=True, text=True, timeout=30, check=False)


def _config(fast_url: str, slow_url: str) -> str:
    return f"""region: test
models:
  m:
    policy: cost-first
    deployments:
{deployment_yaml("cheap", slow_url, cost_in=0.1, cost_out=0.1)}
{deployment_yaml("dear", fast_url, cost_in=9, cost_out=9)}
"""


def test_offline_decision_from_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(_config("http://127.0.0.1:9", "http://127.0.0.1:9"))
    result = _route("--config", str(config), "--model", "m", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)["decisions"][0]
    assert decision["policy"] == "cost-first" and decision["pick"] == "cheap"
    table = _route("--config", str(config), "--model", "m", "--policy", "round-robin")
    assert table.returncode == 0 and "policy round-robin picks" in table.stdout


def test_bad_requests_are_reported_not_raised(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(_config("http://127.0.0.1:9", "http://127.0.0.1:9"))
    unknown = _route("--config", str(config), "--model", "nope")
    assert unknown.returncode != 0 and "does not exist" in unknown.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("region: test\nmodels: {}\n")
    result = _route("--config", str(broken), "--model", "m")
    assert result.returncode != 0 and str(broken) in result.stderr and "models" in result.stderr


@pytest.mark.integration
def test_decision_from_a_running_router(start_simulator: StartSimulator, start_router: StartRouter) -> None:
    fast = start_simulator("route-fast", "--model", "m", "--ttft-ms", "1")
    slow = start_simulator("route-slow", "--model", "m", "--ttft-ms", "30")
    router = start_router("route-router", _config(fast.url, slow.url))
    result = _route("--router", router.url, "--model", "m", "--policy", "latency-first", "--json")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)["decisions"][0]
    assert decision["policy"] == "latency-first"
    assert {c["name"] for c in decision["candidates"]} == {"cheap", "dear"}
