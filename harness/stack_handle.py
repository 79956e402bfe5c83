"""A running stack as a chaos scenario sees it: stack.json's content plus the few actions a fault needs
(Toxiproxy toxics and cuts, simulator settings, killing a control-plane replica). Every action records how
to undo it, so that `restore()` puts the stack back as it was whatever happened in between.

Blocking on purpose (urllib, signals): the runner calls faults in a thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from harness.timeline import Event
from meridian_common.catalog import RoutingDefaults
from meridian_common.logging_setup import event
from meridian_common.service_process import ServiceStartError
from meridian_common.workload import REALISTIC, WorkloadConfig, chat_body, draw
from regions import stack_file
from regions.redis_sentinel import primary_address
from regions.restarts import restart_etcd_member, restart_redis_server, restart_replica
from regions.topology import Topology, load_topology
from simulator.admin_client import SimulatorAdminError, change_sim_config, read_sim_config

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 3.0
DEFAULT_LEASE_TTL_S = 3.0
PRESSURE_REQUEST_TIMEOUT_S = 60.0
PRESSURE_RETRY_S = 0.1
MAX_PRESSURE_REQUESTS = 1000
PUSH_ATTEMPTS = 20
FAILOVER_WAIT_S = 10.0
JOB_POLL_S = 0.25
FINISHED_JOB = ("succeeded", "failed", "cancelled")
PUSH_RETRY_S = 0.1


class ChaosActionError(RuntimeError):
    """A fault could not be injected or undone; the message names the proxy, backend or replica."""


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    name: str
    kind: str
    region: str | None
    to_region: str | None
    backend: str | None
    replica: str | None


def _request(method: str, url: str, body: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raise ChaosActionError(f"{method} {url}: HTTP {error.code}: "
                               f"{error.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ChaosActionError(f"{method} {url}: {error}") from None


def get_json(url: str, timeout_s: float = 1.0) -> Any:
    """The JSON at `url`, None when it does not answer 200 with JSON."""
    try:
        return _request("GET", url, timeout_s=timeout_s)
    except ChaosActionError:
        return None


class StackHandle:
    def __init__(self, stack: Mapping[str, Any], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.stack = stack
        self._clock = clock
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._topology: Topology | None = None

    # --- what the stack is ------------------------------------------------------------------------------------

    @property
    def toxiproxy_url(self) -> str:
        return str(self.stack["toxiproxy"]["url"]).rstrip("/")

    @property
    def routers(self) -> dict[str, str]:
        """router id -> URL."""
        return {rid: str(entry["url"]) for rid, entry in self.stack["router_ids"].items()}

    @property
    def router_regions(self) -> dict[str, str]:
        return {rid: str(entry["region"]) for rid, entry in self.stack["router_ids"].items()}

    @property
    def replicas(self) -> dict[str, dict[str, Any]]:
        return dict(self.stack["control_plane"]["replicas"])

    @property
    def regions(self) -> list[str]:
        return list(self.stack["routers"])

    @property
    def backends(self) -> dict[str, dict[str, Any]]:
        return dict(self.stack["backends"])

    @property
    def rtt_ms(self) -> dict[str, dict[str, float]]:
        return {region: dict(info["rtt_ms"]) for region, info in self.stack["regions"].items()}

    @property
    def topology(self) -> Topology:
        if self._topology is None:
            self._topology = load_topology(Path(self.stack["topology"]))
        return self._topology

    def model_of(self, backend: str) -> RoutingDefaults:
        return self.topology.models[self.backends[backend]["model"]]

    def proxies(self, **where: str | None) -> list[ProxyInfo]:
        """Proxies of stack.json whose fields equal every `where` (kind, region, to_region, backend, replica)."""
        found = []
        for name, entry in sorted(self.stack["toxiproxy"]["proxies"].items()):
            info = ProxyInfo(name, entry["kind"], entry.get("region"), entry.get("to_region"), entry.get("backend"),
                             entry.get("replica"))
            if all(getattr(info, key) == value for key, value in where.items()):
                found.append(info)
        return found

    def lease_ttl_s(self) -> float:
        """The replicas' lease TTL, from the config the launcher wrote."""
        for replica in self.replicas:
            path = Path(self.stack["directory"]) / "run" / "config" / f"{replica}.yaml"
            with contextlib.suppress(OSError, yaml.YAMLError, TypeError, ValueError):
                return float(yaml.safe_load(path.read_text())["lease_ttl_s"])
        return DEFAULT_LEASE_TTL_S

    def replica_health(self, replica: str) -> dict[str, Any] | None:
        body = get_json(f"{self.replicas[replica]['admin']}/health")
        return body if isinstance(body, dict) else None

    def leader(self) -> str | None:
        for replica in self.replicas:
            health = self.replica_health(replica)
            if health is not None and health.get("role") == "leader":
                return replica
        return None

    @property
    def etcd_members(self) -> list[dict[str, Any]]:
        """Every etcd member of stack.json (name, url, pid, proxy...), in order."""
        return list(self.stack["etcd"].get("members", []))

    def etcd_member_in_use(self, replica: str) -> str:
        """The etcd member a replica talks to now: its /health names the endpoint (a member's proxy)."""
        health = self.replica_health(replica) or {}
        endpoint = str(health.get("etcd_endpoint", ""))
        listen = endpoint.removeprefix("http://")
        proxy = next((p.name for p in self.proxies(kind="etcd")
                      if self.stack["toxiproxy"]["proxies"][p.name]["listen"] == listen), None)
        member = next((m["name"] for m in self.etcd_members if proxy is not None and m.get("proxy") == proxy), None)
        if member is None:
            raise ChaosActionError(f"replica {replica} talks to etcd at {endpoint or '(no etcd_endpoint in /health)'},"
                                   " which is no member's proxy in stack.json")
        return str(member)

    def policy_entry(self, region: str, model: str) -> dict[str, Any]:
        """The policy document's entry for (region, model) as the admin API shows it ({} when there is none)."""
        document = self._admin("GET", "/v1/policy")
        return next((e for e in document.get("models", []) if (e.get("region"), e.get("model")) == (region, model)),
                    {})

    # --- events ---------------------------------------------------------------------------------------------

    def note(self, name: str, **detail: Any) -> None:
        with self._lock:
            self._events.append(Event(self._clock(), name, detail))
        log.info(event(f"chaos_{name}", **detail))

    def events(self) -> tuple[Event, ...]:
        with self._lock:
            return tuple(self._events)

    def _on_undo(self, what: str, undo: Callable[[], None]) -> None:
        with self._lock:
            self._undo.append((what, undo))

    # --- faults, each recording its undo ------------------------------------------------------------------------

    def disable_proxy(self, name: str) -> None:
        url = f"{self.toxiproxy_url}/proxies/{name}"
        self._on_undo(f"enable proxy {name}", lambda: _request("POST", url, {"enabled": True}))
        _request("POST", url, {"enabled": False})
        self.note("proxy_disabled", proxy=name)

    def add_toxic(self, proxy: str, toxic: str, toxic_type: str, stream: str, attributes: Mapping[str, int]) -> None:
        base = f"{self.toxiproxy_url}/proxies/{proxy}/toxics"

        def undo() -> None:
            with contextlib.suppress(ChaosActionError):  # already gone is fine: the goal is its absence
                _request("DELETE", f"{base}/{toxic}")

        self._on_undo(f"remove toxic {toxic} of {proxy}", undo)
        _request("POST", base, {"name": toxic, "type": toxic_type, "stream": stream, "toxicity": 1.0,
                                "attributes": dict(attributes)})
        self.note("toxic_added", proxy=proxy, toxic=toxic, type=toxic_type, stream=stream, **attributes)

    def simulator_url(self, backend: str) -> str:
        return f"http://{self.backends[backend]['address']}"

    def wait_for_a_stream(self, backend: str, within_s: float, poll_s: float = 0.01) -> float | None:
        """Seconds until a simulated backend had a stream under way (its `/sim/config` `streaming`), at most
        `within_s`; None when none came (or the backend is not a simulator), which is noted."""
        url = self.simulator_url(backend)
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            try:
                if read_sim_config(url, timeout_s=1.0).get("streaming", 0) >= 1:
                    return waited
            except (SimulatorAdminError, ValueError) as error:  # not a simulator: nothing to wait for
                self.note("no_stream_seen", backend=backend, error=str(error))
                return None
            if waited >= within_s:
                self.note("no_stream_seen", backend=backend, waited_s=round(waited, 3))
                return None
            time.sleep(poll_s)

    def change_simulator(self, backend: str, **changes: Any) -> dict[str, Any]:
        url = self.simulator_url(backend)
        try:
            before = read_sim_config(url)
            original = {key: before[key] for key in changes}
            self._on_undo(f"restore simulator {backend} {original}", lambda: change_sim_config(url, **original))
            after = change_sim_config(url, **changes)
        except Exception as error:
            raise ChaosActionError(f"simulator {backend} ({url}): {error}") from error
        self.note("simulator_changed", backend=backend, **changes)
        return after

    def add_pressure(self, backend: str, concurrency: int, *, workload: WorkloadConfig = REALISTIC) -> None:
        """Other tenants' load straight at a simulated backend: `concurrency` closed-loop senders (threads) of
        whole answers drawn from `workload`, until restore, which also cuts the requests in flight (a simulator
        frees the slot of a client that went away), so that a long answer does not outlive the fault. Bounded
        in count and, per request, in time."""
        stop = threading.Event()
        host, port = str(self.backends[backend]["address"]).rsplit(":", 1)
        model = str(self.backends[backend]["model"])
        in_flight: set[http.client.HTTPConnection] = set()

        def send(index: int) -> None:
            rng = random.Random(f"pressure:{backend}:{index}")
            for _ in range(MAX_PRESSURE_REQUESTS):
                if stop.is_set():
                    return
                body = json.dumps(chat_body(model, replace(draw(workload, rng), stream=False), rng))
                connection = http.client.HTTPConnection(host, int(port), timeout=PRESSURE_REQUEST_TIMEOUT_S)
                try:
                    connection.connect()
                    with self._lock:
                        if stop.is_set():
                            return
                        in_flight.add(connection)
                    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                    connection.getresponse().read()
                except (OSError, http.client.HTTPException):
                    stop.wait(PRESSURE_RETRY_S)
                finally:
                    with self._lock:
                        in_flight.discard(connection)
                    connection.close()

        threads = [threading.Thread(target=send, args=(i,), name=f"chaos-pressure-{backend}-{i}", daemon=True)
                   for i in range(concurrency)]

        def undo() -> None:
            with self._lock:
                stop.set()
                cut = list(in_flight)
            for connection in cut:
                with contextlib.suppress(OSError):
                    if connection.sock is not None:
                        connection.sock.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(timeout=PRESSURE_REQUEST_TIMEOUT_S)

        self._on_undo(f"stop the pressure on {backend}", undo)
        for thread in threads:
            thread.start()
        self.note("pressure_started", backend=backend, concurrency=concurrency, workload=workload.describe())

    def kill_replica(self, replica: str) -> int:
        """SIGKILLs a control-plane replica (no resignation: its lease must expire) and, on restore, starts it
        again on the same ports so that the stack keeps its shape."""
        return self._sigkill(replica, "replica", "replica", restart_replica)

    def kill_etcd_member(self, member: str) -> int:
        """SIGKILLs an etcd member of a cluster (`meridian up --etcd-members 3`) and, on restore, starts it again
        on its ports and data dir, where it rejoins the cluster."""
        return self._sigkill(member, "etcd_member", "member", restart_etcd_member)

    def redis_primary(self) -> str:
        """The Redis server the sentinels name primary now (a stack of `meridian up --redis-sentinel`)."""
        redis = self.stack["redis"]
        if not redis.get("sentinels"):
            raise ChaosActionError("this stack's Redis has no sentinels: start it with `meridian up --redis-sentinel`")
        ports = [int(s["address"].rsplit(":", 1)[1]) for s in redis["sentinels"]]
        try:
            _, port = primary_address(ports, redis["service"])
        except ServiceStartError as error:
            raise ChaosActionError(str(error)) from error
        name = next((s["name"] for s in redis["servers"] if s["port"] == port), None)
        if name is None:
            raise ChaosActionError(f"the sentinels name port {port} primary, which is no server of stack.json")
        return str(name)

    def kill_redis_server(self, name: str) -> int:
        """SIGKILLs a Redis server of the Sentinel group and, on restore, starts it again on its port as a replica
        of the primary the sentinels name then."""

        def restart(path: Path, server: str) -> stack_file.ProcessRecord:
            deadline = time.monotonic() + FAILOVER_WAIT_S
            while self.redis_primary() == server and time.monotonic() < deadline:
                time.sleep(0.1)  # the sentinels have not promoted the replica yet
            return restart_redis_server(path, server)

        return self._sigkill(name, "redis_server", "server", restart)

    def _sigkill(self, name: str, kind: str, key: str,
                 restart: Callable[[Path, str], stack_file.ProcessRecord]) -> int:
        """SIGKILLs a process of the stack (what a crash looks like to everyone else), notes `<kind>_killed`
        with `<key>=name`, and records the undo: once it is gone, `restart(stack file, name)`, which records the
        new process in stack.json."""
        current = self._current_record(name)
        if current is None or not current.alive():
            raise ChaosActionError(f"{kind.replace('_', ' ')} {name} is not a running process of the stack")
        path = Path(self.stack["directory"]) / stack_file.STACK_FILE

        def undo() -> None:
            self._wait_dead(current)
            restarted = restart(path, name)
            self.note(f"{kind}_restarted", **{key: name}, pid=restarted.pid)

        self._on_undo(f"restart {kind.replace('_', ' ')} {name}", undo)
        os.kill(current.pid, signal.SIGKILL)
        self.note(f"{kind}_killed", **{key: name}, pid=current.pid)
        return current.pid

    def submit_job(self, router: str, rng: random.Random, *, workload: WorkloadConfig = REALISTIC) -> str | None:
        """Submits an asynchronous job drawn from `workload` through a router; its id, or None when the router
        refused it (503 while the job store cannot keep it). Noted as `job_submitted` either way."""
        model = next(iter(self.topology.models))
        body = chat_body(model, replace(draw(workload, rng), stream=False), rng)
        try:
            answer = _request("POST", f"{self.routers[router]}/v1/async/chat/completions", body)
        except ChaosActionError as error:
            self.note("job_submitted", router=router, accepted=False, error=str(error)[:160])
            return None
        self.note("job_submitted", router=router, accepted=True, job=answer["id"])
        return str(answer["id"])

    def job_status(self, router: str, job_id: str) -> str:
        """The job's status as a router shows it (`queued`, `running`, `succeeded`...), `missing` on a 404 and
        `unreachable` when the router did not answer or could not read the job store."""
        try:
            return str(_request("GET", f"{self.routers[router]}/v1/async/{job_id}")["status"])
        except ChaosActionError as error:
            return "missing" if "HTTP 404" in str(error) else "unreachable"

    def settle_jobs(self, jobs: list[tuple[str, str]], within_s: float) -> None:
        """Polls every (router, job id) until it finished, for `within_s` at most; notes each job's last status
        as `job_outcome`."""
        status = {job: "not checked" for _, job in jobs}
        deadline = time.monotonic() + within_s
        for _ in range(int(within_s / JOB_POLL_S) + 1):
            for router, job in jobs:
                if status[job] not in FINISHED_JOB:
                    status[job] = self.job_status(router, job)
            if all(s in FINISHED_JOB for s in status.values()) or time.monotonic() >= deadline:
                break
            time.sleep(JOB_POLL_S)
        for job, last in status.items():
            self.note("job_outcome", job=job, status=last)

    def push_policy(self, region: str, model: str, **changes: Any) -> None:
        """`POST /v1/policy/set` through the first replica that accepts it, as an operator's client would: a
        503 (etcd unreachable from that replica for the moment) is tried again, boundedly. On restore, the
        fields pushed get their values from before the first push back."""
        before = self.policy_entry(region, model)
        original = {key: before.get(key) for key in changes}

        def undo() -> None:
            self._push_with_retries({"region": region, "model": model, **original, "author": "chaos-restore"})

        self._on_undo(f"restore policy {region}/{model} {original}", undo)
        sent_s = self._clock()
        attempts = self._push_with_retries({"region": region, "model": model, **changes, "author": "chaos"})
        self.note("policy_pushed", region=region, model=model, sent_s=round(sent_s, 3), attempts=attempts, **changes)

    def _push_with_retries(self, body: Mapping[str, Any]) -> int:
        last: ChaosActionError | None = None
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            try:
                self._admin("POST", "/v1/policy/set", body)
                return attempt
            except ChaosActionError as error:
                last = error
                time.sleep(PUSH_RETRY_S)
        raise ChaosActionError(f"policy push refused {PUSH_ATTEMPTS} times: {last}")

    def _admin(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The admin API of the first replica that answers (a killed replica does not)."""
        headers = {"Authorization": f"Bearer {self.stack['admin_token']}"}
        failures = []
        for replica, info in self.replicas.items():
            try:
                return _request(method, f"{info['admin']}{path}", body, headers)
            except ChaosActionError as error:
                failures.append(f"{replica}: {error}")
        raise ChaosActionError("; ".join(failures))

    def _wait_dead(self, record: stack_file.ProcessRecord) -> None:
        deadline = time.monotonic() + 5.0
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL is asynchronous: let the kernel finish the old process first

    def _current_record(self, name: str) -> stack_file.ProcessRecord | None:
        """A process's record in the stack file now (a restart by an earlier scenario changed its pid)."""
        path = Path(self.stack["directory"]) / stack_file.STACK_FILE
        with contextlib.suppress(stack_file.StackFileError):
            current = stack_file.read_stack(path)
            if current is not None:
                return next((r for r in stack_file.processes(current) if r.name == name), None)
        return None

    def restore(self) -> list[str]:
        """Undoes every change, newest first; returns what could not be undone (each also logged)."""
        with self._lock:
            undo, self._undo = list(reversed(self._undo)), []
        failures = []
        for what, action in undo:
            try:
                action()
            except Exception as error:  # one failed undo must not leave the others undone
                log.warning(event("chaos_restore_failed", action=what, error=str(error)))
                failures.append(f"{what}: {error}")
        if undo:
            self.note("restored", actions=len(undo), failures=len(failures))
        return failures
