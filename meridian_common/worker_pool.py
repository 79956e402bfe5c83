"""Runs N copies of a server as child processes on one port (SO_REUSEPORT): starts them, restarts one that dies
after a backoff, forwards SIGTERM/SIGINT so that each drains as a lone server would, and returns once all have
stopped. The parent never serves: it holds the port (bound, not listening) so that no other program takes it
while a worker restarts, and it announces the port once every worker listens.

Synchronous on purpose: the parent runs no event loop and no thread, so that forking a worker is plain.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from meridian_common.aiohttp_serving import announce_port, bind_socket
from meridian_common.logging_setup import event
from meridian_common.supervision import Backoff

log = logging.getLogger(__name__)

POLL_S = 0.1
_PR_SET_PDEATHSIG = 1

WorkerArgv = Callable[[int, Path], Sequence[str]]
"""The argv of worker `index`, which must write the port it bound to the given file once it serves."""


class WorkerPoolError(RuntimeError):
    """A worker exited or stayed silent while the pool was starting: the pool did not start."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Binds (host, port) with SO_REUSEPORT without listening: the port (any free one for 0) stays the pool's
    for as long as this socket is open, workers binding it with SO_REUSEPORT too, and the kernel never hands
    this socket a connection since it does not listen (Linux only gives connections to listening sockets of
    a reuseport group)."""
    return bind_socket(host, port, reuse_port=True)


def failures_in_a_row(previous: int, ran_s: float, backoff: Backoff) -> int:
    """After a worker exited having run `ran_s`: a worker that lived `backoff.max_s` starts the count afresh,
    as a supervised loop does (meridian_common.supervision)."""
    return 1 if ran_s >= backoff.max_s else previous + 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, so a container's cpuset counts), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it should the pool's process die without stopping it (SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class _Slot:
    index: int
    port_file: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


@dataclass(slots=True)
class WorkerPool:
    """`count` workers, each started as `argv_of(index, port_file)` with `env` added to this process's own."""

    argv_of: WorkerArgv
    count: int
    directory: Path
    name: str = "server"
    env: Mapping[str, str] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.5, max_s=30.0))
    start_timeout_s: float = 60.0
    _slots: list[_Slot] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)

    def run(self, port: int, port_file: Path | None = None) -> int:
        """Starts the workers and supervises them until SIGTERM or SIGINT, then forwards it to each and waits
        for all to exit (a second signal kills them). Returns 0 after a stop, 1 if the pool did not start."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._slots = [_Slot(i, self.directory / f"worker-{i}.port") for i in range(self.count)]
            for slot in self._slots:
                self._start(slot)
            try:
                self._wait_started(port)
            except WorkerPoolError as error:
                log.error(event("workers_not_started", server=self.name, reason=str(error)))
                self._stop_all(signal.SIGTERM)
                return 1
            if not self._signals:
                log.info(event("workers_serving", server=self.name, workers=self.count, port=port))
                announce_port(port_file, port)
                self._supervise()
            self._stop_all(self._signals[0] if self._signals else signal.SIGTERM)
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot.process is not None]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)
        if len(self._signals) > 1:  # asked twice: stop waiting for the drain
            for slot in self._slots:
                if slot.process is not None and slot.process.poll() is None:
                    slot.process.kill()

    def _start(self, slot: _Slot) -> None:
        with contextlib.suppress(FileNotFoundError):
            slot.port_file.unlink()
        slot.process = subprocess.Popen(list(self.argv_of(slot.index, slot.port_file)),
                                        env={**os.environ, **self.env}, preexec_fn=_die_with_parent)
        slot.started_at = time.monotonic()
        slot.restart_at = None

    def _wait_started(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        waiting = list(self._slots)
        while waiting and not self._signals:
            for slot in list(waiting):
                assert slot.process is not None
                if (code := slot.process.poll()) is not None:
                    raise WorkerPoolError(f"worker {slot.index} (pid {slot.process.pid}) exited with code {code} "
                                          "while starting")
                announced = _read_port(slot.port_file)
                if announced is not None:
                    if announced != port:
                        raise WorkerPoolError(f"worker {slot.index} bound port {announced}, not {port}")
                    waiting.remove(slot)
            if waiting and time.monotonic() >= deadline:
                raise WorkerPoolError(f"workers {[s.index for s in waiting]} were not serving within "
                                      f"{self.start_timeout_s} s")
            time.sleep(POLL_S)

    def _supervise(self) -> None:
        while not self._signals:
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is not None and (code := slot.process.poll()) is not None:
                    ran_s = now - slot.started_at
                    slot.failures = failures_in_a_row(slot.failures, ran_s, self.backoff)
                    delay_s = self.backoff.delay_s(slot.failures)
                    log.warning(event("worker_exited", server=self.name, worker=slot.index, pid=slot.process.pid,
                                      returncode=code, ran_s=round(ran_s, 1), failures_in_a_row=slot.failures,
                                      restart_in_s=delay_s))
                    slot.process, slot.restart_at = None, now + delay_s
                elif slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
                    assert slot.process is not None
                    log.info(event("worker_restarted", server=self.name, worker=slot.index, pid=slot.process.pid))
            time.sleep(POLL_S)

    def _stop_all(self, signum: int) -> None:
        """Forwards `signum` to every live worker and waits for all of them (each drains as a lone server)."""
        live = [slot for slot in self._slots if slot.process is not None and slot.process.poll() is None]
        log.info(event("workers_stopping", server=self.name, signal=signal.Signals(signum).name, workers=len(live)))
        for slot in live:
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signum)
        for slot in self._slots:
            if slot.process is not None:
                slot.process.wait()
        log.info(event("workers_stopped", server=self.name,
                       returncodes=",".join(str(s.process.returncode) for s in self._slots if s.process)))


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text else None
