"""The chaos scenarios that need replicated dependencies, against one real stack of the chaos topology started
with `meridian up --etcd-members 3 --redis-sentinel`: every check of each scenario passes and the stack is put
back whole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.runner import run_and_report, wait_steady
from chaos.scenario import DEFAULT_FEATURES, RunSettings
from chaos.scenarios import SCENARIOS
from harness.stack_handle import StackHandle
from regions import stack_file
from regions.launcher import UpOptions, run_up
from regions.teardown import run_down

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

TOPOLOGY = Path(__file__).resolve().parent / "topology-chaos.yaml"
SHORT = RunSettings(baseline_s=2.5, fault_s=4.0, recovery_s=3.5, steady_timeout_s=20.0)
HA_SCENARIOS = [name for name, scenario in SCENARIOS.items() if not scenario.needs <= DEFAULT_FEATURES]


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("chaos-ha-stack")
    code = run_up(UpOptions(topology_path=TOPOLOGY, directory=directory, etcd_members=3, redis_sentinel=True),
                  detach=True, say=lambda _: None)
    try:
        assert code == 0, "meridian up failed; see the logs under " + str(directory / ".meridian" / "logs")
        yield directory
    finally:
        run_down(directory, say=lambda _: None)


def _assert_whole(stack: dict[str, Any]) -> None:
    assert all(r.alive() for r in stack_file.processes(stack)), "a process of the stack is not running"
    assert asyncio.run(wait_steady(StackHandle(stack), 20.0)) == []


@pytest.mark.parametrize("name", HA_SCENARIOS)
def test_scenario(name: str, stack_dir: Path, tmp_path: Path) -> None:
    stack = stack_file.find_stack(stack_dir)  # re-read: a restarted member has a new pid
    assert SCENARIOS[name].unmet_needs(stack) is None
    settings = RunSettings(baseline_s=SHORT.baseline_s, fault_s=SHORT.fault_s, recovery_s=SHORT.recovery_s,
                           steady_timeout_s=SHORT.steady_timeout_s, reports_dir=tmp_path)
    result = asyncio.run(run_and_report(SCENARIOS[name], stack, settings, say=print))
    print("\n".join(result.verdict_lines()))
    assert result.passed, "\n".join(result.verdict_lines())
    _assert_whole(stack_file.find_stack(stack_dir))


def test_the_default_stack_cannot_run_them() -> None:
    default = {"etcd": {"url": "http://127.0.0.1:1", "members": [{"name": "etcd"}]}, "redis": {"url": "redis://x"}}
    assert {n for n in HA_SCENARIOS} == {"etcd-member-loss", "redis-failover"}
    for name in HA_SCENARIOS:
        reason = SCENARIOS[name].unmet_needs(default)
        assert reason is not None and "(`meridian up --" in reason
