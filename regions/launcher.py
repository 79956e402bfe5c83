"""`meridian up`: a whole multi-region stack on 127.0.0.1, from a topology file (`teardown` stops it,
`restarts` starts a part of it again).

Start order (each part waited on, with a progress line, before what depends on it): etcd, Redis, Toxiproxy
with the control plane's proxies, the simulated backends, the routers' proxies (Redis, backends, cross-region
links with RTT/2 of latency each way), two control-plane replicas, their per-region gRPC proxies, the
routers; then every router must have applied a control-plane table. Any failure stops what was started and
shows the failing part's log. `stack_config` decides the wiring; this module only does the I/O.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from meridian_common.logging_setup import event
from meridian_common.service_process import ServiceProcess, ServiceStartError, log_tail, pick_free_port, start_service
from regions import stack_file
from regions.local_services import start_etcd, start_etcd_cluster, start_redis
from regions.proxies import ProxySetupError, create_proxies
from regions.redis_sentinel import start_sentinel_group
from regions.stack_config import (
    ADMIN_TOKEN_ENV,
    LOOPBACK,
    ProxySpec,
    RouterPlan,
    control_plane_config,
    control_plane_proxies,
    cp_grpc_proxies,
    data_plane_proxies,
    etcd_proxy_names,
    host_port,
    router_config,
    router_ids,
    simulator_argv,
    simulator_url,
)
from regions.teardown import stop_records
from regions.topology import Topology, load_topology
from regions.toxiproxy.launcher import RunningToxiproxy, start_toxiproxy

log = logging.getLogger(__name__)

CONTROL_PLANE_REPLICAS = ("cp-1", "cp-2")
SERVICE_START_TIMEOUT_S = 30.0
TABLE_WAIT_S = 45.0
ROUTER_START_ATTEMPTS = 3
POLL_S = 0.1
_MERIDIAN = (sys.executable, "-m", "meridian_cli.main")
_BIND_FAILURE = "address already in use"

Say = Callable[[str], None]


class StackStartError(RuntimeError):
    """A part of the stack did not start; the message names it and ends with its log's last lines."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    topology_path: Path
    routers_per_region: int = 1
    router_workers: int = 1
    """Worker processes of each router (`meridian router --workers`)."""
    directory: Path = field(default_factory=Path.cwd)
    table_wait_s: float = TABLE_WAIT_S
    etcd_members: int = 1
    """1: a single etcd; 3 (or any N): a cluster of N members, every one in each replica's endpoints."""
    redis_sentinel: bool = False
    """A Redis primary, a replica and three sentinels instead of one Redis; every client uses the sentinels."""


@dataclass(slots=True)
class _Started:
    """What this launch started, in start order, so that a failure or Ctrl-C stops it in reverse."""

    stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    records: list[stack_file.ProcessRecord] = field(default_factory=list)

    def add(self, name: str, pid: int, log_path: Path, stop: Callable[[], None]) -> None:
        self.stops.append((name, stop))
        self.records.append(stack_file.record_process(name, pid, log_path))

    def stop_all(self, say: Say | None = None) -> None:
        for name, stop in reversed(self.stops):
            try:
                stop()
            except Exception as error:  # one stubborn part must not keep the rest running
                log.warning(event("stop_failed", part=name, error=type(error).__name__))
            if say is not None:
                say(f"  stopped {name}")
        self.stops.clear()


@dataclass(frozen=True, slots=True)
class _Layout:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def configs(self) -> Path:
        return self.run / "config"

    @property
    def ports(self) -> Path:
        return self.run / "ports"

    def state(self, router_id: str) -> Path:
        return self.run / "state" / router_id

    @property
    def stack(self) -> Path:
        return self.root / stack_file.STACK_FILE

    @property
    def lock(self) -> Path:
        return self.root / "up.lock"


# --- small I/O helpers ---------------------------------------------------------------------------------------

def _get_json(url: str, timeout_s: float = 1.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _fresh_layout(root: Path) -> _Layout:
    """A run starts from empty data and state: a table persisted by a previous stack would carry a version
    from an etcd that no longer exists and make the routers refuse the new one. Logs of the previous run
    are kept next to the new ones."""
    layout = _Layout(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(layout.run, ignore_errors=True)
    if layout.logs.exists():
        previous = root / "logs.previous"
        shutil.rmtree(previous, ignore_errors=True)
        layout.logs.rename(previous)
    for directory in (layout.logs, layout.configs, layout.ports):
        directory.mkdir(parents=True, exist_ok=True)
    return layout


def _elapsed(started: float) -> str:
    return f"{time.monotonic() - started:5.1f}s"


# --- the parts -------------------------------------------------------------------------------------------------

def _start_etcd(layout: _Layout, started: _Started, say: Say, t0: float, members: int) -> list[dict[str, Any]]:
    """A single etcd (process `etcd`), or a cluster of `members` (etcd-1, etcd-2...); returns each member's
    entry of stack.json (name, client URL, pid; a cluster member also its peer URL and data dir, which
    `restart_etcd_member` needs)."""
    if members == 1:
        etcd = start_etcd(layout.run / "data", layout.logs / "etcd.log", ready_timeout_s=SERVICE_START_TIMEOUT_S)
        started.add("etcd", etcd.pid, etcd.log_path, etcd.stop)
        say(f"[{_elapsed(t0)}] etcd        {etcd.url}  (pid {etcd.pid})")
        return [{"name": "etcd", "url": etcd.url, "pid": etcd.pid}]
    cluster = start_etcd_cluster(members, layout.run / "data", layout.logs, ready_timeout_s=SERVICE_START_TIMEOUT_S)
    entries = []
    for member, service in cluster:
        started.add(member.name, service.pid, service.log_path, service.stop)
        say(f"[{_elapsed(t0)}] etcd        {member.name:<12} {member.client_url}  (pid {service.pid})")
        entries.append({"name": member.name, "url": member.client_url, "pid": service.pid,
                        "peer_url": member.peer_url, "data_dir": str(member.data_dir)})
    return entries


def _start_redis(layout: _Layout, started: _Started, say: Say, t0: float, sentinel: bool) -> dict[str, Any]:
    """One Redis (process `redis`), or with `sentinel` a primary, its replica and three sentinels; returns
    stack.json's `redis` entry (`url` is what clients use: the sentinels' URL with Sentinel)."""
    if not sentinel:
        redis = start_redis(layout.run / "data" / "redis", layout.logs / "redis.log",
                            ready_timeout_s=SERVICE_START_TIMEOUT_S)
        started.add("redis", redis.pid, redis.log_path, redis.stop)
        say(f"[{_elapsed(t0)}] redis       {redis.url}  (pid {redis.pid})")
        return {"url": redis.url, "pid": redis.pid}
    group = start_sentinel_group(layout.run / "data" / "redis", layout.logs, ready_timeout_s=SERVICE_START_TIMEOUT_S)
    for process in (*group.servers, *group.sentinels):
        started.add(process.name, process.pid, process.log_path, process.stop)
        say(f"[{_elapsed(t0)}] redis       {process.name:<12} {process.host}:{process.port}  (pid {process.pid})")
    say(f"[{_elapsed(t0)}] redis       {group.url}  (service {group.service}, primary {group.servers[0].name})")
    return {"url": group.url, "service": group.service,
            "servers": [{"name": s.name, "url": s.url, "port": s.port, "pid": s.pid,
                         "data_dir": str(layout.run / "data" / "redis" / s.name)} for s in group.servers],
            "sentinels": [{"name": s.name, "address": f"{s.host}:{s.port}", "pid": s.pid} for s in group.sentinels]}


def _start_infrastructure(layout: _Layout, started: _Started, say: Say, t0: float, options: UpOptions
                          ) -> tuple[list[dict[str, Any]], dict[str, Any], RunningToxiproxy]:
    etcd = _start_etcd(layout, started, say, t0, options.etcd_members)
    redis = _start_redis(layout, started, say, t0, options.redis_sentinel)
    try:
        toxiproxy = start_toxiproxy(layout.logs / "toxiproxy.log")
    except RuntimeError as error:
        raise StackStartError(f"toxiproxy did not start: {error}") from error
    started.add("toxiproxy", toxiproxy.pid, layout.logs / "toxiproxy.log", toxiproxy.stop)
    say(f"[{_elapsed(t0)}] toxiproxy   {toxiproxy.url}  ({toxiproxy.implementation}, pid {toxiproxy.pid})")
    return etcd, redis, toxiproxy


def _start_each(names_argv: Sequence[tuple[str, list[str]]], layout: _Layout, started: _Started, *,
                health_path: str, env: dict[str, str] | None = None) -> dict[str, ServiceProcess]:
    """Starts every (name, argv) at once and waits for all; registers each that started, then raises the
    first failure (with its log tail) if any."""

    def one(name: str, argv: list[str]) -> ServiceProcess:
        return start_service(name, argv, layout.ports, health_path=health_path, timeout_s=SERVICE_START_TIMEOUT_S,
                             env=env, log_path=layout.logs / f"{name}.log")

    results: dict[str, ServiceProcess] = {}
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, len(names_argv))) as pool:
        futures = {name: pool.submit(one, name, argv) for name, argv in names_argv}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as error:
                failures.append(error)
    for name, service in results.items():
        started.add(name, service.pid, service.log_path, service.stop)
    if failures:
        raise failures[0]
    return results


def _start_simulators(topology: Topology, layout: _Layout, started: _Started, say: Say, t0: float
                      ) -> dict[str, str]:
    """Starts every simulated backend; returns the direct base URL of every backend (real ones too)."""
    simulated = [(b.name, [*_MERIDIAN, *simulator_argv(b)]) for _, b in topology.backends() if b.simulated]
    services = _start_each(simulated, layout, started, health_path="/health") if simulated else {}
    urls: dict[str, str] = {}
    for region, backend in topology.backends():
        if backend.simulated:
            service = services[backend.name]
            urls[backend.name] = simulator_url(f"{LOOPBACK}:{service.port}")
            say(f"[{_elapsed(t0)}] backend     {backend.name:<12} {region:<10} {backend.profile:<16} "
                f"{urls[backend.name]}  (pid {service.pid})")
        else:
            assert backend.url is not None
            urls[backend.name] = str(backend.url).rstrip("/")
            say(f"[{_elapsed(t0)}] backend     {backend.name:<12} {region:<10} real: {urls[backend.name]}")
    return urls


def _create_proxies(api_url: str, specs: Sequence[ProxySpec], layout: _Layout) -> dict[str, str]:
    try:
        return create_proxies(api_url, specs)
    except ProxySetupError as error:
        raise StackStartError(f"{error}; log {layout.logs / 'toxiproxy.log'}:\n"
                              f"{log_tail(layout.logs / 'toxiproxy.log')}") from error


def _start_control_plane(topology: Topology, layout: _Layout, started: _Started, *, backend_urls: dict[str, str],
                         listens: dict[str, str], env: dict[str, str], etcd_members: int,
                         redis_url: str | None) -> dict[str, dict[str, Any]]:
    """Both replicas; returns each one's bound addresses (grpc, admin, admin_grpc) and pid."""
    argvs = []
    for replica in CONTROL_PLANE_REPLICAS:
        config = _write_yaml(layout.configs / f"{replica}.yaml",
                             control_plane_config(topology, replica, backend_urls=backend_urls, listens=listens,
                                                  etcd_members=etcd_members, redis_url=redis_url))
        argvs.append((replica, [*_MERIDIAN, "control-plane", "--config", str(config), "--ports-file",
                                str(layout.ports / f"{replica}.json")]))
    services = _start_each(argvs, layout, started, health_path="/health", env=env)
    replicas = {}
    for replica, service in services.items():
        ports_file = layout.ports / f"{replica}.json"
        try:
            addresses = json.loads(ports_file.read_text())["addresses"]
        except (OSError, ValueError, KeyError) as error:
            raise StackStartError(f"control-plane replica {replica} wrote no usable {ports_file}; log "
                                  f"{service.log_path}:\n{log_tail(service.log_path)}") from error
        replicas[replica] = {**addresses, "pid": service.pid}
    return replicas


def _start_routers(topology: Topology, layout: _Layout, started: _Started, routers_per_region: int, *,
                   backend_urls: dict[str, str], listens: dict[str, str], env: dict[str, str],
                   workers: int = 1, redis_url: str | None = None) -> list[RouterPlan]:
    """Every router on a port picked in advance (each router's config lists all of them for /v1/regions).
    Should another process take one of those ports first, all routers are started again on new ones."""
    ids = router_ids(topology, routers_per_region)
    last_error: Exception | None = None
    for attempt in range(1, ROUTER_START_ATTEMPTS + 1):
        ports: list[int] = []
        for _ in range(len(ids) * 4):
            if len(ports) == len(ids):
                break
            if (port := pick_free_port()) not in ports:
                ports.append(port)
        plans = [RouterPlan(region, router_id, port) for (region, router_id), port in zip(ids, ports, strict=True)]
        argvs = []
        for plan in plans:
            document = router_config(topology, plan, all_routers=plans, replicas=CONTROL_PLANE_REPLICAS,
                                     backend_urls=backend_urls, listens=listens,
                                     state_dir=layout.state(plan.router_id), redis_url=redis_url)
            config = _write_yaml(layout.configs / f"router-{plan.router_id}.yaml", document)
            argvs.append((f"router-{plan.router_id}", [*_MERIDIAN, "router", "--config", str(config),
                                                       *(["--workers", str(workers)] if workers > 1 else [])]))
        attempt_started = _Started()
        try:
            _start_each(argvs, layout, attempt_started, health_path="/ready", env=env)
        except ServiceStartError as error:
            attempt_started.stop_all()
            if _BIND_FAILURE not in str(error).lower():
                raise
            last_error = error
            log.warning(event("router_port_taken", attempt=attempt))
            continue
        started.stops.extend(attempt_started.stops)
        started.records.extend(attempt_started.records)
        return plans
    raise StackStartError(f"routers could not bind free ports in {ROUTER_START_ATTEMPTS} attempts: {last_error}")


def _wait_for_tables(plans: Sequence[RouterPlan], layout: _Layout, timeout_s: float, say: Say, t0: float) -> None:
    """Until every router has applied a table from the control plane (its /routing says so). A router with
    workers counts once each of its workers has said so: each connection reaches one of them at random."""
    pending = {plan.router_id: plan for plan in plans}
    applied: dict[str, set[int]] = {plan.router_id: set() for plan in plans}
    deadline = time.monotonic() + timeout_s
    while pending:
        for router_id, plan in list(pending.items()):
            routing = _get_json(f"{plan.url}/routing")
            table = routing.get("table", {}) if isinstance(routing, dict) else {}
            worker = routing.get("worker") if isinstance(routing, dict) else None
            if table.get("source") != "control-plane":
                continue
            if isinstance(worker, dict):
                applied[router_id].add(int(worker["index"]))
                if len(applied[router_id]) < int(worker["count"]):
                    continue
            del pending[router_id]
            say(f"[{_elapsed(t0)}] router      {router_id:<12} {plan.region:<10} {plan.url}  "
                f"table v{table.get('version')} from the control plane")
        if pending and time.monotonic() >= deadline:
            tails = "\n".join(
                f"--- {path.name}:\n{log_tail(path, 8)}"
                for path in [*(layout.logs / f"router-{r}.log" for r in pending),
                             *(layout.logs / f"{c}.log" for c in CONTROL_PLANE_REPLICAS)]
            )
            raise StackStartError(f"routers {sorted(pending)} applied no control-plane table within "
                                  f"{timeout_s:.0f} s\n{tails}")
        if pending:
            time.sleep(POLL_S * 2)


# --- the stack ---------------------------------------------------------------------------------------------------

def bring_up(options: UpOptions, say: Say, admin_token: str) -> tuple[dict[str, Any], _Started]:
    """Starts the whole stack; returns the stack.json content and what to stop. On failure everything
    started is stopped before the error propagates."""
    topology = load_topology(options.topology_path)
    layout = _fresh_layout(stack_file.state_dir(options.directory))
    started = _Started()
    env = {ADMIN_TOKEN_ENV: admin_token}
    t0 = time.monotonic()
    try:
        etcd, redis, toxiproxy = _start_infrastructure(layout, started, say, t0, options)
        # With Sentinel, clients ask the sentinels where the primary is, so no proxy stands in front of Redis.
        redis_address = None if options.redis_sentinel else host_port(redis["url"])
        sentinel_url = redis["url"] if options.redis_sentinel else None
        specs = control_plane_proxies([host_port(m["url"]) for m in etcd], redis_address)
        listens = _create_proxies(toxiproxy.url, specs, layout)
        for member, proxy in zip(etcd, etcd_proxy_names(len(etcd)), strict=True):
            member["proxy"] = proxy
        backend_urls = _start_simulators(topology, layout, started, say, t0)
        data_specs = data_plane_proxies(topology, redis_address, backend_urls)
        listens |= _create_proxies(toxiproxy.url, data_specs, layout)
        specs += data_specs
        say(f"[{_elapsed(t0)}] proxies     {len(listens)} (Redis, etcd, backends, cross-region with RTT/2 "
            "latency each way)")
        replicas = _start_control_plane(topology, layout, started, backend_urls=backend_urls, listens=listens,
                                        env=env, etcd_members=options.etcd_members, redis_url=sentinel_url)
        for replica, addresses in replicas.items():
            say(f"[{_elapsed(t0)}] control     {replica:<12} admin {addresses['admin']}  grpc {addresses['grpc']}"
                f"  (pid {addresses['pid']})")
        grpc_specs = cp_grpc_proxies(topology, {r: a["grpc"] for r, a in replicas.items()})
        listens |= _create_proxies(toxiproxy.url, grpc_specs, layout)
        specs += grpc_specs
        plans = _start_routers(topology, layout, started, options.routers_per_region, backend_urls=backend_urls,
                               listens=listens, env=env, workers=options.router_workers, redis_url=sentinel_url)
        say(f"[{_elapsed(t0)}] routers     {len(plans)} serving; waiting for their control-plane tables")
        _wait_for_tables(plans, layout, options.table_wait_s, say, t0)
    except BaseException:
        started.stop_all()
        raise
    stack = {
        "format": stack_file.FORMAT_VERSION,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "directory": str(layout.root.resolve()),
        "topology": str(options.topology_path.resolve()),
        "admin_token_env": ADMIN_TOKEN_ENV,
        "admin_token": admin_token,
        "regions": {name: {"rtt_ms": rtts} for name, rtts in topology.rtt_matrix().items()},
        "clients": {name: c.model_dump(mode="json") for name, c in topology.clients.items()},
        "routers": {region: [p.url for p in plans if p.region == region] for region in topology.regions},
        "router_ids": {p.router_id: {"region": p.region, "url": p.url} for p in plans},
        "router_workers": options.router_workers,
        "control_plane": {
            "admin": [replicas[r]["admin"] for r in CONTROL_PLANE_REPLICAS],
            "admin_grpc": [replicas[r]["admin_grpc"] for r in CONTROL_PLANE_REPLICAS],
            "grpc": [replicas[r]["grpc"] for r in CONTROL_PLANE_REPLICAS],
            "replicas": {r: {k: v for k, v in replicas[r].items()} for r in CONTROL_PLANE_REPLICAS},
            "etcd_prefix": "/meridian",
        },
        # url: the first member's (the only one unless --etcd-members); members: every one, with its pid.
        "etcd": {"url": etcd[0]["url"], "members": etcd},
        "redis": redis,
        "toxiproxy": {
            "url": toxiproxy.url, "implementation": toxiproxy.implementation, "pid": toxiproxy.pid,
            "proxies": {spec.name: spec.describe(listens[spec.name]) for spec in specs},
        },
        "backends": {
            b.name: {"region": region, "model": b.model, "profile": b.profile, "simulated": b.simulated,
                     "url": backend_urls[b.name], "address": host_port(backend_urls[b.name])}
            for region, b in topology.backends()
        },
        "logs": str(layout.logs.resolve()),
        "processes": [record.as_json() for record in started.records],
    }
    return stack, started


@contextlib.contextmanager
def _launch_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock held while this process launches (and, in the foreground, runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _running_message(stack: dict[str, Any], path: Path) -> str:
    routers = ", ".join(url for urls in stack.get("routers", {}).values() for url in urls)
    return (f"a stack is already running here ({path}; routers {routers or '-'}): "
            "run `meridian down` first")


def _refusal(layout: _Layout) -> str | None:
    """Why a new stack must not start here, or None."""
    try:
        previous = stack_file.read_stack(layout.stack)
    except stack_file.StackFileError as error:
        return str(error)
    if previous is not None and (stack_file.alive_processes(previous) or stack_file.launcher_alive(previous)):
        return _running_message(previous, layout.stack)
    return None


def _summary(stack: dict[str, Any], say: Say) -> None:
    say("\nstack ready:")
    for region, urls in stack["routers"].items():
        say(f"  {region:<10} routers {' '.join(urls)}   (clients: base_url=<router>/v1)")
    say(f"  control plane admin {' '.join(stack['control_plane']['admin'])}")
    say(f"  stack file {Path(stack['directory']) / stack_file.STACK_FILE} (holds the admin token; mode 0600)")
    say(f"  logs       {stack['logs']}")


def run_up(options: UpOptions, *, detach: bool, say: Say = print, err: TextIO = sys.stderr) -> int:
    layout = _Layout(stack_file.state_dir(options.directory))
    refusal = _refusal(layout)
    if refusal is not None:
        print(f"meridian up: {refusal}", file=err)
        return 1
    with _launch_lock(layout.lock) as locked:
        # Checked again under the lock: another `up` may have finished starting in between.
        refusal = _refusal(layout) if locked else "another `meridian up` is starting in this directory"
        if refusal is not None:
            print(f"meridian up: {refusal}", file=err)
            return 1
        if layout.stack.exists():
            say(f"(replacing {layout.stack}: that stack is no longer running)")
        token = secrets.token_urlsafe(32)
        say(f"starting the stack of {options.topology_path} in {layout.root}")
        try:
            stack, started = bring_up(options, say, token)
        except (ServiceStartError, StackStartError, ProxySetupError) as error:
            print(f"meridian up: {error}", file=err)
            return 1
        except KeyboardInterrupt:
            print("meridian up: interrupted; everything started was stopped", file=err)
            return 130
        if detach:
            stack["launcher"] = None
            stack_file.write_stack(layout.stack, stack)
            _summary(stack, say)
            say("  detached: `meridian down` stops it")
            return 0
        stack["launcher"] = stack_file.record_process("meridian-up", os.getpid()).as_json()
        stack_file.write_stack(layout.stack, stack)
        _summary(stack, say)
        say("  running in the foreground: Ctrl-C (or `meridian down`) stops it")
        _wait_for_signal()
        say("\nstopping the stack...")
        _stop_restarted(layout.stack, started, say)
        started.stop_all(say)
        with contextlib.suppress(FileNotFoundError):
            layout.stack.unlink()
        say("stopped")
        return 0


def _wait_for_signal() -> None:
    """Blocks until SIGINT, SIGTERM or SIGHUP."""
    stop = threading.Event()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_restarted(path: Path, started: _Started, say: Say) -> None:
    """Stops processes of stack.json that this launcher did not start itself (a replica that a chaos
    scenario killed and `restart_replica` started again), before the rest, so that Ctrl-C stops everything."""
    ours = {(r.pid, r.start_ticks) for r in started.records}
    with contextlib.suppress(stack_file.StackFileError):
        stack = stack_file.read_stack(path)
        others = [r for r in stack_file.alive_processes(stack or {}) if (r.pid, r.start_ticks) not in ours]
        if others:
            stop_records(others)
            say("  stopped " + ", ".join(f"{r.name} (restarted, pid {r.pid})" for r in others))
