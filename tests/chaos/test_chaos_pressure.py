"""Other tenants' pressure on a real simulator (`StackHandle.add_pressure`): realistic whole answers keep its
slots busy, and restore cuts the requests in flight at once, so that no long answer outlives the fault."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from harness.stack_handle import StackHandle
from meridian_common.workload import REALISTIC
from simulator.admin_client import read_sim_config
from simulator.process import start_simulator

pytestmark = pytest.mark.integration


def test_pressure_fills_the_backend_and_restore_cuts_it(tmp_path: Path) -> None:
    # 10 ms a token: a median answer holds its slot for about two seconds.
    with start_simulator(["--model", "m", "--ttft-ms", "5", "--itl-ms", "10", "--capacity", "2"],
                         tmp_path / "sim.log") as sim:
        handle = StackHandle({"backends": {"b": {"model": "m", "address": f"127.0.0.1:{sim.port}"}}})
        handle.add_pressure("b", 3, workload=REALISTIC.model_copy(update={"answer_tokens_sigma": 0.0}))
        deadline = time.monotonic() + 5
        view = read_sim_config(sim.url)
        while view["running"] + view["waiting"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            view = read_sim_config(sim.url)
        assert (view["running"], view["waiting"]) == (2, 1)
        started = time.monotonic()
        assert handle.restore() == []
        assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + 2
        while read_sim_config(sim.url)["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        view = read_sim_config(sim.url)
        assert (view["running"], view["waiting"], view["served"]) == (0, 0, 0)
        assert view["cancelled"] == 3
        assert [e.name for e in handle.events()] == ["pressure_started", "restored"]
