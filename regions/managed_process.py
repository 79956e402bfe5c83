"""A child process we own: started in its own session with its output in a log file, waited on with a
bounded readiness check, stopped by pid and always reaped."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from meridian_common.logging_setup import event
from meridian_common.service_process import ServiceStartError, log_tail

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


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
                log.warning(event("process_stop_escalated", service=self.name, pid=self.pid,
                                  timeout_s=timeout_s))
                self.process.kill()
        self.process.wait()
        returncode = self.process.returncode
        log.info(event("process_stopped", service=self.name, pid=self.pid, returncode=returncode))

    def kill(self) -> None:
        """SIGKILL without a chance to clean up: what a crash looks like to everyone else."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        log.info(event("process_killed", service=self.name, pid=self.pid))


def spawn(
    name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        # A session of its own keeps a Ctrl-C meant for the test runner from reaching the child first.
        process = subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
    log.info(event("process_started", service=name, pid=process.pid, log=log_path))
    return ManagedProcess(name, process, log_path)


def wait_ready(
    managed: ManagedProcess, ready: Callable[[], bool], timeout_s: float, poll_s: float = 0.05
) -> None:
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
    on a bind failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
