"""`meridian down`, and the order in which any stop of a local stack goes: routers first, etcd last."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from meridian_common.logging_setup import event
from regions import stack_file

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
KILL_GRACE_S = 3.0
LAUNCHER_EXIT_WAIT_S = 30.0
POLL_S = 0.1

Say = Callable[[str], None]


def _wait_gone(records: Sequence[stack_file.ProcessRecord], timeout_s: float) -> list[stack_file.ProcessRecord]:
    deadline = time.monotonic() + timeout_s
    alive = [r for r in records if r.alive()]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [r for r in alive if r.alive()]
    return alive


def _signal(records: Sequence[stack_file.ProcessRecord], signum: int) -> None:
    for record in records:
        if record.alive():  # checked right before: never signal a pid that another process now has
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signum)


_INFRASTRUCTURE = ("toxiproxy", "redis", "etcd")


def _infrastructure(name: str) -> str | None:
    """Which infrastructure tier a process belongs to: `etcd-2` to etcd like `etcd`, `redis-1` and `sentinel-1`
    to redis."""
    name = "redis-" + name if name.startswith("sentinel-") else name
    return next((tier for tier in _INFRASTRUCTURE if name == tier or name.startswith(f"{tier}-")), None)


def stop_tiers(records: Sequence[stack_file.ProcessRecord]) -> list[list[stack_file.ProcessRecord]]:
    """The order of a stop: routers, then backends and control-plane replicas (a leader resigns through
    etcd, so etcd must still be there), then Toxiproxy, Redis and etcd one by one. The members of an etcd
    cluster stop one after the other: stopped together, each waits for the others to take over its leadership
    and the whole tier took 6 s instead of 1.4."""
    routers = [r for r in records if r.name.startswith("router-")]
    middle = [r for r in records if r not in routers and _infrastructure(r.name) is None]
    infrastructure = [[r for r in records if _infrastructure(r.name) == tier] for tier in _INFRASTRUCTURE[:-1]]
    etcd = [[r] for r in records if _infrastructure(r.name) == "etcd"]
    return [tier for tier in (routers, middle, *infrastructure, *etcd) if tier]


def stop_records(records: Sequence[stack_file.ProcessRecord]) -> list[stack_file.ProcessRecord]:
    """SIGTERM tier by tier (see stop_tiers), SIGKILL to whatever outlives the grace period; returns the
    processes that survived even that."""
    survivors: list[stack_file.ProcessRecord] = []
    for tier in stop_tiers(records):
        _signal(tier, signal.SIGTERM)
        remaining = _wait_gone(tier, STOP_GRACE_S)
        if remaining:
            log.warning(event("stop_escalated", parts=",".join(r.name for r in remaining)))
            _signal(remaining, signal.SIGKILL)
            survivors += _wait_gone(remaining, KILL_GRACE_S)
    return survivors


def run_down(directory: Path, *, say: Say = print, err: TextIO = sys.stderr) -> int:
    path = stack_file.stack_path(directory)
    try:
        stack = stack_file.read_stack(path)
    except stack_file.StackFileError as error:
        print(f"meridian down: {error}", file=err)
        return 1
    if stack is None:
        say(f"no stack to stop ({path} does not exist)")
        return 0
    launcher = stack.get("launcher")
    if launcher is not None:
        record = stack_file.ProcessRecord.from_json(launcher)
        if record.alive():
            # A foreground `meridian up` stops its own children in order and removes the stack file.
            say(f"asking the foreground `meridian up` (pid {record.pid}) to stop the stack")
            _signal([record], signal.SIGTERM)
            _wait_gone([record], LAUNCHER_EXIT_WAIT_S)
    records = stack_file.processes(stack)
    running = [r for r in records if r.alive()]
    for tier in stop_tiers(running):
        say("stopping " + ", ".join(f"{r.name} (pid {r.pid})" for r in tier))
    survivors = stop_records(running)
    if survivors:
        print("meridian down: still running after SIGKILL: "
              + ", ".join(f"{r.name} (pid {r.pid})" for r in survivors), file=err)
        return 1
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    say(f"stopped {len(running)} processes; logs kept in {stack.get('logs', '-')}")
    return 0
