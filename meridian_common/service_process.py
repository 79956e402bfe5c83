"""Child processes the project starts and owns: etcd, Redis, Toxiproxy and Meridian's own servers.

A child runs in its own session with its output in a log file, becomes ready within a bounded wait, and
is stopped by pid and always reaped. Every Meridian server takes `--port 0 --port-file PATH`: it binds any
free port and writes the number there once listening, so `start_service` never races another process for
a port.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from meridian_common.logging_setup import event

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ServiceStartError(RuntimeError):
    """The child exited or did not become ready in time; the message ends with its last log lines."""


@dataclass(frozen=True, slots=True)
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; always reaped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(event("process_stop_escalated", service=self.name, pid=self.pid, timeout_s=timeout_s))
                self.process.kill()
        self.process.wait()
        log.info(event("process_stopped", service=self.name, pid=self.pid, returncode=self.process.returncode))

    def kill(self) -> None:
        """SIGKILL without a chance to clean up: what a crash looks like to everyone else."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        log.info(event("process_killed", service=self.name, pid=self.pid))


@dataclass(frozen=True, slots=True)
class ServiceProcess(ManagedProcess):
    """A Meridian server, with the port it announced."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class ProcessHandle:
    """The controls every handle on a started child offers, through the ManagedProcess it holds as `managed`."""

    __slots__ = ()
    managed: ManagedProcess

    @property
    def pid(self) -> int:
        return self.managed.pid

    @property
    def log_path(self) -> Path:
        return self.managed.log_path

    def alive(self) -> bool:
        return self.managed.alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; the child is always reaped."""
        self.managed.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as its clients can tell."""
        self.managed.kill()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        # A session of its own keeps a Ctrl-C meant for the parent from reaching the child first.
        process = subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    log.info(event("process_started", service=name, pid=process.pid, log=log_path))
    return ManagedProcess(name, process, log_path)


def wait_ready(managed: ManagedProcess, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> None:
    """Polls `ready` until it is true; raises ServiceStartError (child left running) if the child exits or
    the deadline passes first, so that the caller decides whether to retry or stop it."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not managed.alive():
            raise ServiceStartError(
                f"{managed.name} exited with code {managed.process.returncode} while starting; "
                f"log {managed.log_path}:\n{log_tail(managed.log_path)}"
            )
        if ready():
            return
        if time.monotonic() >= deadline:
            raise ServiceStartError(
                f"{managed.name} was not ready within {timeout_s} s; log {managed.log_path}:\n"
                f"{log_tail(managed.log_path)}"
            )
        time.sleep(poll_s)


def pick_free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago; the child may still lose it to another process, so callers retry
    on a bind failure. Meridian's own servers take `--port 0` instead."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status < 500)
    except (urllib.error.URLError, OSError):
        return False


def _announced_port(port_file: Path) -> int | None:
    try:
        text = port_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text else None


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
    managed = spawn(name, [*argv, "--port-file", str(port_file)], log_path or workdir / f"{name}.log", env)
    announced: list[int] = []

    def ready() -> bool:
        if not announced:
            port = _announced_port(port_file)
            if port is None:
                return False
            announced.append(port)
            port_file.unlink()
        return health_path is None or _http_ok(f"http://{LOOPBACK}:{announced[0]}{health_path}")

    try:
        wait_ready(managed, ready, timeout_s)
    except ServiceStartError:
        managed.stop()
        raise
    return ServiceProcess(managed.name, managed.process, managed.log_path, announced[0])
