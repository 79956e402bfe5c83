"""Starts a Toxiproxy server for tests and local stacks: the real `toxiproxy-server` when it is on PATH,
else Meridian's (`meridian toxiproxy-server`); waits until its API answers and stops it without leaks."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from meridian_common.logging_setup import event
from meridian_common.service_process import (
    LOOPBACK,
    ManagedProcess,
    ServiceStartError,
    pick_free_port,
    spawn,
    start_service,
    wait_ready,
)

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# Real toxiproxy-server cannot report a port it picked, so we pick one; another process may take it first.
REAL_SERVER_ATTEMPTS = 3
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True, slots=True)
class RunningToxiproxy:
    managed: ManagedProcess
    url: str
    implementation: Literal["real", "meridian"]

    @property
    def pid(self) -> int:
        return self.managed.pid

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.managed.process

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; safe to call twice."""
        self.managed.stop(timeout_s)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/version", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _start_real(binary: str, log_path: Path, port: int) -> RunningToxiproxy:
    for attempt in range(1, REAL_SERVER_ATTEMPTS + 1):
        url = f"http://{LOOPBACK}:{port or pick_free_port()}"
        managed = spawn("toxiproxy", [binary, "-host", LOOPBACK, "-port", url.rsplit(":", 1)[1]], log_path)
        try:
            wait_ready(managed, lambda u=url: _answers(u), READY_TIMEOUT_S)
        except ServiceStartError:
            lost_port_race = not managed.alive()
            managed.stop()
            if port or not lost_port_race or attempt == REAL_SERVER_ATTEMPTS:
                raise  # the caller's port, or not a port race: retrying cannot help
            continue
        return RunningToxiproxy(managed, url, "real")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _start_meridian(log_path: Path, port: int) -> RunningToxiproxy:
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "meridian_cli.main", "toxiproxy-server", "--host", LOOPBACK, "--port", str(port)]
    service = start_service("toxiproxy", argv, log_path.parent, health_path="/version", timeout_s=READY_TIMEOUT_S,
                            env=env, log_path=log_path)
    return RunningToxiproxy(service, service.url, "meridian")


def start_toxiproxy(log_path: Path, port: int = 0) -> RunningToxiproxy:
    """A running Toxiproxy on 127.0.0.1:`port` (0: any free port), its output appended to `log_path`."""
    binary = shutil.which("toxiproxy-server")
    running = _start_real(binary, log_path, port) if binary else _start_meridian(log_path, port)
    log.info(event("toxiproxy.server_started", url=running.url, pid=running.pid,
                   implementation=running.implementation))
    return running
