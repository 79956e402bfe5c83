"""Starts a Toxiproxy server for tests and local stacks: the real `toxiproxy-server` when it is on PATH,
else Meridian's (`meridian toxiproxy-server`); waits until its API answers and stops it without leaks."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# Real toxiproxy-server cannot report a port it picked, so we pick one; another process may take it first.
REAL_SERVER_ATTEMPTS = 3
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True, slots=True)
class RunningToxiproxy:
    url: str
    pid: int
    process: subprocess.Popen[bytes]
    implementation: Literal["real", "meridian"]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        log.info(event("toxiproxy.server_stopped", pid=self.pid, implementation=self.implementation,
                       returncode=self.process.returncode))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/version", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(log_path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return log_path.read_text(errors="replace")[-limit:]
    return ""


def _wait_ready(process: subprocess.Popen[bytes], port_of: Callable[[], int | None], log_path: Path) -> str | None:
    """The API URL once `GET /version` answers; None if the process died first. Raises on timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        port = port_of()
        if port is not None and _answers(url := f"http://{HOST}:{port}"):
            return url
        time.sleep(0.05)
    process.kill()
    process.wait(timeout=STOP_TIMEOUT_S)
    raise RuntimeError(f"toxiproxy did not answer GET /version within {READY_TIMEOUT_S:.0f}s; "
                       f"log {log_path}:\n{_log_tail(log_path)}")


def _spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env)


def _start_real(binary: str, log_path: Path, port: int) -> RunningToxiproxy:
    for _ in range(REAL_SERVER_ATTEMPTS):
        chosen = port or _free_port()
        process = _spawn([binary, "-host", HOST, "-port", str(chosen)], log_path)
        url = _wait_ready(process, functools.partial(int, chosen), log_path)
        if url is not None:
            return RunningToxiproxy(url=url, pid=process.pid, process=process, implementation="real")
        if port:
            break  # the caller's port: retrying cannot help
    raise RuntimeError(f"toxiproxy-server exited before answering; log {log_path}:\n{_log_tail(log_path)}")


def _start_meridian(log_path: Path, port: int) -> RunningToxiproxy:
    with tempfile.TemporaryDirectory(prefix="meridian-toxiproxy-") as tmp:
        port_file = Path(tmp) / "port"

        def port_of() -> int | None:
            with contextlib.suppress(OSError, ValueError):
                return int(port_file.read_text())
            return None

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        process = _spawn([sys.executable, "-m", "meridian_cli.main", "toxiproxy-server", "--host", HOST,
                          "--port", str(port), "--port-file", str(port_file)], log_path, env)
        url = _wait_ready(process, port_of, log_path)
    if url is None:
        raise RuntimeError(f"meridian toxiproxy-server exited ({process.returncode}) before answering; "
                           f"log {log_path}:\n{_log_tail(log_path)}")
    return RunningToxiproxy(url=url, pid=process.pid, process=process, implementation="meridian")


def start_toxiproxy(log_path: Path, port: int = 0) -> RunningToxiproxy:
    """A running Toxiproxy on 127.0.0.1:`port` (0: any free port), its output appended to `log_path`."""
    binary = shutil.which("toxiproxy-server")
    running = _start_real(binary, log_path, port) if binary else _start_meridian(log_path, port)
    log.info(event("toxiproxy.server_started", url=running.url, pid=running.pid,
                   implementation=running.implementation))
    return running
