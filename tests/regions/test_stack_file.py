"""stack.json: written atomically with mode 0600, read back, and a recorded process is alive only while that
very process (pid and start time) runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from regions import stack_file
from regions.stack_file import ProcessRecord, StackFileError, find_stack, read_stack, record_process, write_stack
from regions.teardown import stop_tiers


def _stack(records: list[ProcessRecord]) -> dict[str, object]:
    return {"format": stack_file.FORMAT_VERSION, "processes": [r.as_json() for r in records],
            "control_plane": {"admin": ["http://127.0.0.1:1"]}, "admin_token": "t0k"}


def test_write_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / ".meridian" / "stack.json"
    write_stack(path, _stack([]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_stack(path) == _stack([])
    assert [p.name for p in path.parent.iterdir()] == ["stack.json"]  # no temporary file left


def test_read_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    assert read_stack(path) is None
    path.write_text("{")
    with pytest.raises(StackFileError, match="not valid JSON"):
        read_stack(path)
    path.write_text('{"format": 99}')
    with pytest.raises(StackFileError, match="format"):
        read_stack(path)


def test_alive_follows_the_process_not_the_pid(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = record_process("sleeper", child.pid)
        assert record.alive()
        # Same pid, another start time: a reused pid is not ours.
        assert not ProcessRecord("sleeper", child.pid, (record.start_ticks or 0) + 1).alive()
        write_stack(stack_file.stack_path(tmp_path), _stack([record]))
        found = find_stack(tmp_path)
        assert stack_file.admin_urls(found) == ["http://127.0.0.1:1"]
        assert stack_file.admin_token(found) == "t0k"
    finally:
        child.kill()
        child.wait()
    assert not record.alive()
    with pytest.raises(StackFileError, match="not running any more"):
        find_stack(tmp_path)


def test_find_stack_without_a_file(tmp_path: Path) -> None:
    with pytest.raises(StackFileError, match="meridian up"):
        find_stack(tmp_path)


def test_own_process_is_alive() -> None:
    assert record_process("me", os.getpid()).alive()


def test_stop_tiers_routers_first_etcd_last() -> None:
    names = ["etcd", "redis", "toxiproxy", "sim-a", "cp-1", "cp-2", "router-us-1", "router-eu-1"]
    tiers = stop_tiers([ProcessRecord(n, i + 1, None) for i, n in enumerate(names)])
    assert [[r.name for r in tier] for tier in tiers] == [
        ["router-us-1", "router-eu-1"], ["sim-a", "cp-1", "cp-2"], ["toxiproxy"], ["redis"], ["etcd"]]


def test_stop_tiers_of_replicated_dependencies() -> None:
    names = ["etcd-1", "etcd-2", "etcd-3", "redis-1", "redis-2", "sentinel-1", "toxiproxy", "cp-1", "router-us-1"]
    tiers = stop_tiers([ProcessRecord(n, i + 1, None) for i, n in enumerate(names)])
    assert [[r.name for r in tier] for tier in tiers] == [
        ["router-us-1"], ["cp-1"], ["toxiproxy"], ["redis-1", "redis-2", "sentinel-1"], ["etcd-1"], ["etcd-2"],
        ["etcd-3"]]
