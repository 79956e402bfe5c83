"""The overhead bench's call count: a server started under cProfile writes its statistics when SIGTERM stops it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.call_count import ProfiledServer, profiled_argv, total_calls
from meridian_common.service_process import start_service


def test_a_profiled_server_writes_its_call_count_when_stopped(tmp_path: Path) -> None:
    server = ProfiledServer("passthrough", [sys.executable, "-m", "benchmarks.passthrough", "--upstream",
                                            "http://127.0.0.1:9"], None)
    stats = tmp_path / "passthrough.prof"
    service = start_service("passthrough", profiled_argv(server.argv, stats), tmp_path, health_path=None)
    service.stop(timeout_s=15.0)
    assert total_calls(stats) > 1000  # at least its imports


def test_only_a_module_can_be_profiled() -> None:
    with pytest.raises(ValueError, match="python -m module"):
        profiled_argv([sys.executable, "script.py"], Path("out.prof"))
