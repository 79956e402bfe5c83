"""Starts one of the project's servers as a child process on an ephemeral port and stops it by pid.

Every Meridian server takes `--port 0 --port-file PATH`: it binds any free port and writes the number
there once listening, so a launcher never races another process for a port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class ServiceStartError(RuntimeError):
    """The child exited or did not become ready in time; the message ends with its last log lines."""


@dataclass(slots=True)
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; always reaped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status < 500)
    except (urllib.error.URLError, OSError):
        return False


def start_service(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    *,
    health_path: str | None = "/health",
    timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
) -> ServiceProcess:
    """Runs `argv --port-file <file>` and waits (bounded) for the port and then for `health_path`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / f"{name}-{uuid.uuid4().hex[:8]}.port"
    log_path = log_path or workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*argv, "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    service: ServiceProcess | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceStartError(f"{name} exited with code {process.returncode} while starting; "
                                    f"log {log_path}:\n{log_tail(log_path)}")
        if service is None and port_file.exists() and port_file.read_text().strip():
            service = ServiceProcess(name, process, int(port_file.read_text()), log_path)
            port_file.unlink()
        if service is not None and (health_path is None or _http_ok(service.url + health_path)):
            return service
        time.sleep(0.05)
    ServiceProcess(name, process, 0, log_path).stop()
    raise ServiceStartError(f"{name} was not ready within {timeout_s} s; log {log_path}:\n{log_tail(log_path)}")
