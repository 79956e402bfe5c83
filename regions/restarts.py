"""Starts a part of a running local stack again after it died (a chaos scenario killed it), where it was: a
control-plane replica on its ports, an etcd member on its ports and data, a Redis server of a Sentinel group as a
replica of the current primary; each new process is recorded in stack.json, where `meridian down` finds it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meridian_common.logging_setup import event
from meridian_common.service_process import start_service
from regions import local_services, stack_file
from regions.launcher import _MERIDIAN, SERVICE_START_TIMEOUT_S, StackStartError, _Layout
from regions.local_services import EtcdMember, start_redis
from regions.redis_sentinel import primary_address
from regions.stack_config import ADMIN_TOKEN_ENV

log = logging.getLogger(__name__)


def restart_replica(path: Path, replica: str) -> stack_file.ProcessRecord:
    """Starts a control-plane replica of the running stack of `path` (stack.json) again after it died (a
    chaos scenario killed it), on the ports it had, so that its proxies and stack.json's addresses stay right;
    records the new process in stack.json, where `meridian down` finds it."""
    stack = stack_file.read_stack(path)
    if stack is None:
        raise StackStartError(f"no stack file at {path}")
    layout = _Layout(path.parent)
    addresses = stack["control_plane"]["replicas"].get(replica)
    if addresses is None:
        raise StackStartError(f"{path}: no control-plane replica {replica!r}")
    records = stack_file.processes(stack)
    if any(r.name == replica and r.alive() for r in records):
        raise StackStartError(f"control-plane replica {replica} is still running")
    ports = {key: str(addresses[key]).rsplit(":", 1)[1] for key in ("grpc", "admin", "admin_grpc")}
    argv = [*_MERIDIAN, "control-plane", "--config", str(layout.configs / f"{replica}.yaml"),
            "--grpc-port", ports["grpc"], "--admin-port", ports["admin"], "--admin-grpc-port", ports["admin_grpc"],
            "--ports-file", str(layout.ports / f"{replica}.json")]
    service = start_service(replica, argv, layout.ports, health_path="/health", timeout_s=SERVICE_START_TIMEOUT_S,
                            env={ADMIN_TOKEN_ENV: str(stack["admin_token"])}, log_path=layout.logs / f"{replica}.log")
    record = _record_restart(path, replica, service.pid, service.log_path,
                             lambda stack: stack["control_plane"]["replicas"][replica])
    log.info(event("replica_restarted", replica=replica, pid=service.pid))
    return record


def restart_etcd_member(path: Path, name: str) -> stack_file.ProcessRecord:
    """Starts a member of the running stack's etcd cluster (`meridian up --etcd-members`) again after it died,
    on its ports and data dir, so that it rejoins the cluster; records it in stack.json."""
    stack = stack_file.read_stack(path)
    if stack is None:
        raise StackStartError(f"no stack file at {path}")
    entries = stack["etcd"].get("members", [])
    if any("peer_url" not in entry for entry in entries):
        raise StackStartError(f"{path}: etcd is a single member, not a cluster; start a stack with "
                              "`meridian up --etcd-members 3` to restart members")
    cluster = [EtcdMember(e["name"], e["url"], e["peer_url"], Path(e["data_dir"])) for e in entries]
    member = next((m for m in cluster if m.name == name), None)
    if member is None:
        raise StackStartError(f"{path}: no etcd member {name!r}; members: {', '.join(m.name for m in cluster)}")
    if any(r.name == name and r.alive() for r in stack_file.processes(stack)):
        raise StackStartError(f"etcd member {name} is still running")
    layout = _Layout(path.parent)
    service = local_services.restart_etcd_member(member, cluster, layout.logs / f"{name}.log",
                                                 ready_timeout_s=SERVICE_START_TIMEOUT_S)
    return _record_restart(path, name, service.pid, service.log_path,
                           lambda stack: next(e for e in stack["etcd"]["members"] if e["name"] == name))


def restart_redis_server(path: Path, name: str) -> stack_file.ProcessRecord:
    """Starts a Redis server of the running stack's Sentinel group (`meridian up --redis-sentinel`) again after
    it died, on its port, as a replica of whichever server the sentinels name primary now (a failover may have
    promoted the other one); records it in stack.json."""
    stack = stack_file.read_stack(path)
    if stack is None:
        raise StackStartError(f"no stack file at {path}")
    redis = stack["redis"]
    entry = next((e for e in redis.get("servers", []) if e["name"] == name), None)
    if entry is None:
        raise StackStartError(f"{path}: no Redis server {name!r} of a Sentinel group (`meridian up --redis-sentinel`)")
    if any(r.name == name and r.alive() for r in stack_file.processes(stack)):
        raise StackStartError(f"Redis server {name} is still running")
    _, primary_port = primary_address([int(s["address"].rsplit(":", 1)[1]) for s in redis["sentinels"]],
                                      redis["service"])
    if primary_port == entry["port"]:
        raise StackStartError(f"the sentinels still name {name} (port {primary_port}) primary: wait for the failover")
    layout = _Layout(path.parent)
    service = start_redis(Path(entry["data_dir"]), layout.logs / f"{name}.log", entry["port"], name=name,
                          replica_of=primary_port, ready_timeout_s=SERVICE_START_TIMEOUT_S)
    return _record_restart(path, name, service.pid, service.log_path,
                           lambda stack: next(e for e in stack["redis"]["servers"] if e["name"] == name))


def _record_restart(path: Path, name: str, pid: int, log_path: Path,
                    entry_of: Callable[[dict[str, Any]], dict[str, Any]]) -> stack_file.ProcessRecord:
    """Records a restarted process in stack.json: its process record, and the pid in its own entry."""
    record = stack_file.record_process(name, pid, log_path)
    # Re-read: the file may have changed while the process started.
    stack = stack_file.read_stack(path)
    if stack is None:
        raise StackStartError(f"{path} vanished while {name} restarted (pid {pid})")
    stack["processes"] = [record.as_json() if entry["name"] == name else entry for entry in stack["processes"]]
    entry_of(stack)["pid"] = pid
    stack_file.write_stack(path, stack)
    return record
