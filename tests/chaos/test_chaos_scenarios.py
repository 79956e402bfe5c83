"""Every chaos scenario against one real stack (tests/chaos/topology-chaos.yaml: two regions, three simulated
backends, two control-plane replicas, etcd, Redis, Toxiproxy), with short phases; those that need an etcd cluster
or Redis Sentinel run in test_chaos_ha_scenarios.py. Each test asserts that
every check of its scenario passed and that the stack was put back; one scenario runs through the CLI to
cover the exit code and the report files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.runner import run_and_report, wait_steady
from chaos.scenario import DEFAULT_FEATURES, RunSettings, ScenarioResult
from chaos.scenarios import SCENARIOS
from harness.stack_handle import StackHandle, get_json
from regions import stack_file
from regions.launcher import UpOptions, run_up
from regions.teardown import run_down

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TOPOLOGY = Path(__file__).resolve().parent / "topology-chaos.yaml"
SHORT = RunSettings(baseline_s=2.5, fault_s=4.0, recovery_s=3.5, steady_timeout_s=20.0)


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("chaos-stack")
    code = run_up(UpOptions(topology_path=TOPOLOGY, directory=directory), detach=True, say=lambda _: None)
    try:
        assert code == 0, "meridian up failed; see the logs under " + str(directory / ".meridian" / "logs")
        yield directory
    finally:
        run_down(directory, say=lambda _: None)


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> dict[str, Any]:
    return stack_file.find_stack(stack_dir)


def _settings(reports: Path) -> RunSettings:
    # etcd-loss stretches its own phases (Scenario.min_fault_s / min_recovery_s).
    return RunSettings(baseline_s=SHORT.baseline_s, fault_s=SHORT.fault_s, recovery_s=SHORT.recovery_s,
                       steady_timeout_s=SHORT.steady_timeout_s, reports_dir=reports)


def _assert_restored(stack: dict[str, Any]) -> None:
    proxies = get_json(f"{stack['toxiproxy']['url']}/proxies")
    assert isinstance(proxies, dict)
    for name, proxy in proxies.items():
        assert proxy["enabled"], f"proxy {name} left disabled"
        assert not [t for t in proxy["toxics"] if t["name"].startswith("chaos_")], f"toxic left on {name}"
    topology_sims = {"us-linear": 8, "us-dense": 16, "eu-moe": 16}
    for backend, capacity in topology_sims.items():
        config = get_json(f"http://{stack['backends'][backend]['address']}/sim/config")
        assert config["capacity"] == capacity and config["error_rate"] == 0.0, (backend, config)


def _run(name: str, stack_dir: Path, tmp_path: Path) -> ScenarioResult:
    current = stack_file.find_stack(stack_dir)  # re-read: a restarted replica has a new pid
    result = asyncio.run(run_and_report(SCENARIOS[name], current, _settings(tmp_path), say=print))
    assert result.report_dir is not None and (result.report_dir / "report.md").exists()
    return result


@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items()
                                  if n != "redis-latency" and s.needs <= DEFAULT_FEATURES])
def test_scenario(name: str, stack_dir: Path, stack: dict[str, Any], tmp_path: Path) -> None:
    result = _run(name, stack_dir, tmp_path)
    _assert_restored(stack)
    assert result.passed, "\n".join(result.verdict_lines())


def test_leader_kill_leaves_the_stack_whole(stack_dir: Path) -> None:
    """After leader-kill the killed replica runs again (restarted on its ports), so `meridian down` and
    later scenarios find two replicas."""
    current = stack_file.find_stack(stack_dir)
    handle = StackHandle(current)
    roles = sorted(str((handle.replica_health(r) or {}).get("role")) for r in handle.replicas)
    assert roles == ["follower", "leader"], roles
    assert all(r.alive() for r in stack_file.processes(current) if r.name.startswith("cp-"))
    assert asyncio.run(wait_steady(handle, 20.0)) == []


def test_cli_run_writes_report_and_verdicts(stack_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meridian_cli.main", "chaos", "run", "redis-latency", "--duration", "3",
         "--baseline", "2.5", "--recovery", "2", "--reports", str(tmp_path), "--json"],
        cwd=stack_dir, capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  redis-latency: time to first token unchanged" in result.stderr
    (summary,) = json.loads(result.stdout)
    report = Path(summary["report"])
    assert report.parent == tmp_path and report.name.startswith("chaos-redis-latency-")
    assert {p.name for p in report.iterdir()} == {"report.md", "report.json", "timeline.png"}
    figures = json.loads((report / "report.json").read_text())
    assert figures["passed"] and figures["figures"]["fault"]["requests"] > 0
    assert (report / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_without_a_stack(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "meridian_cli.main", "chaos", "run", "redis-loss"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "meridian up --detach" in result.stderr
    listing = subprocess.run([sys.executable, "-m", "meridian_cli.main", "chaos", "list"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0 and all(name in listing.stdout for name in SCENARIOS)
