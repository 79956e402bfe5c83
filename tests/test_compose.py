"""The compose stack (docker-compose.yml, Dockerfile, deploy/) against the code it runs.

Docker is not needed: the compose file is checked as data (services, dependencies, ports, mounts), every
Meridian command is parsed by the real CLI parser, every config file is loaded by the project's own loaders
with the service's environment, the Toxiproxy, Prometheus and Grafana files are checked against the services
they name, and every metric the Grafana dashboard queries is looked up in the /metrics of a real router and
simulator (and of a real control-plane replica once `meridian control-plane` exists).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from control_plane.config import ControlPlaneConfig, load_control_plane_config
from data_plane.config import RouterConfig, load_router_config
from data_plane.metrics import RouterMetrics
from meridian_cli.main import build_parser
from meridian_common.service_process import ServiceProcess, start_service
from regions import local_services
from regions.toxiproxy.api_json import parse_populate

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD_FILE = ROOT / "deploy" / "grafana" / "dashboards" / "meridian.json"
LATENCY_SCRIPT = ROOT / "deploy" / "toxiproxy-latency.sh"

# What the dashboard needs the control plane to export on its admin HTTP listener's /metrics, without a
# token (Prometheus scrapes it as it does the routers). Names are as they appear in the exposition.
CONTROL_PLANE_METRICS: Mapping[str, str] = {
    "meridian_cp_is_leader": "gauge: 1 while this replica holds the etcd leader key, else 0",
    "meridian_cp_epoch": "gauge: the epoch (leader key create-revision) of the leader this replica knows",
    "meridian_cp_table_version": "gauge{region}: version of the newest table this replica holds for the region",
    "meridian_cp_publications_total": "counter{region}: tables this replica published as leader",
}

# Ports the non-Meridian images listen on (facts about those images, not settings of this repo).
IMAGE_PORTS: Mapping[str, frozenset[int]] = {
    "quay.io/coreos/etcd": frozenset({2379, 2380}),
    "redis": frozenset({6379}),
    "prom/prometheus": frozenset({9090}),
    "grafana/grafana": frozenset({3000}),
    "ollama/ollama": frozenset({11434}),
}
_CONTAINER_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_METRIC_NAME = re.compile(r"\b(?:meridian_[a-zA-Z0-9_]+|vllm:[a-zA-Z0-9_:]+|sim_[a-zA-Z0-9_]+)")
_COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# What a user must set before `docker compose up` (the file gives these no default), as the tests set them.
REQUIRED_ENVIRONMENT: Mapping[str, str] = {"MERIDIAN_ADMIN_TOKEN": "compose-test-admin-token",
                                           "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana-password"}


# --- reading the compose file -------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


class UnsetVariable(ValueError):
    """`${VAR:?message}` (or `${VAR?message}`) with VAR unset: compose refuses to start."""


def compose_value(text: str, environment: Mapping[str, str] = REQUIRED_ENVIRONMENT) -> str:
    """Compose's own interpolation of `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` and
    `${VAR?error}` with only `environment` set (the colon forms treat an empty value as unset)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op") or "", match.group("arg") or ""
        value = environment.get(name)
        unset = value is None or (op.startswith(":") and not value)
        if unset and op.endswith("?"):
            raise UnsetVariable(f"{name}: {arg}")
        if unset and op.endswith("-"):
            return arg
        return value or ""

    return _COMPOSE_VARIABLE.sub(substitute, text).replace("$$", "$")


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def is_meridian(service: Mapping[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).startswith("meridian")


def meridian_services() -> list[str]:
    return sorted(name for name, service in services().items() if is_meridian(service))


def command_of(service: Mapping[str, Any]) -> list[str]:
    """The command as compose runs it: split, with variables interpolated (`${MERIDIAN_ROUTER_WORKERS:-1}`)."""
    command = service.get("command", [])
    parts = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    return [compose_value(part) for part in parts]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: compose_value(str(value)) for key, value in environment.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: PurePosixPath
    bind: bool


def mounts_of(service: Mapping[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
            bind = volume.get("type") == "bind"
        else:
            parts = str(volume).split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
            bind = source.startswith((".", "/", "~"))
        found.append(Mount(source, PurePosixPath(target), bind))
    return found


def host_path(service: Mapping[str, Any], container_path: str) -> Path | None:
    """The repository file a container path of the service comes from, through its bind mounts."""
    wanted = PurePosixPath(container_path)
    for mount in mounts_of(service):
        if not mount.bind:
            continue
        if wanted == mount.target:
            return (ROOT / mount.source).resolve()
        if mount.target in wanted.parents:
            return (ROOT / mount.source / wanted.relative_to(mount.target)).resolve()
    return None


def dependencies_of(service: Mapping[str, Any]) -> dict[str, str]:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return {name: "service_started" for name in depends_on}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends_on.items()}


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    published: int | None
    target: int


def parse_port(entry: Any) -> PortMapping:
    """Compose's short (`[IP:][HOST:]CONTAINER[/PROTO]`) or long syntax; raises ValueError when invalid."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return _checked(str(entry.get("host_ip", "")), str(published) if published is not None else "",
                        str(entry["target"]))
    text = str(entry).split("/", 1)[0]
    parts = text.rsplit(":", 2)
    if len(parts) == 1:
        return _checked("", "", parts[0])
    if len(parts) == 2:
        return _checked("", parts[0], parts[1])
    return _checked(parts[0], parts[1], parts[2])


def _checked(host_ip: str, published: str, target: str) -> PortMapping:
    def port(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError(f"{text!r} is not a port number from 1 to 65535")
        return int(text)

    if host_ip and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}|\[?[0-9a-fA-F:]+\]?", host_ip):
        raise ValueError(f"{host_ip!r} is not an IP address")
    return PortMapping(host_ip, port(published) if published else None, port(target))


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name V`, `--name=V`, `-name V` or `-name=V` in a command."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# --- the configs the services load -----------------------------------------------------------------------------


def config_path(name: str) -> Path:
    service = services()[name]
    container_path = option(command_of(service), "--config")
    assert container_path, f"service {name}: its command names no --config"
    path = host_path(service, container_path)
    assert path is not None, f"service {name}: --config {container_path} is not a file mounted from the repository"
    return path


def load_service_config(name: str, monkeypatch: pytest.MonkeyPatch) -> RouterConfig | ControlPlaneConfig:
    """Loads a Meridian service's config file as the container would: with the service's environment."""
    service = services()[name]
    for key, value in environment_of(service).items():
        monkeypatch.setenv(key, value)
    command = command_of(service)
    if command[0] == "router":
        return load_router_config(config_path(name))
    if command[0] == "control-plane":
        return load_control_plane_config(config_path(name))
    raise AssertionError(f"service {name}: no loader for the config of {command[0]!r}")


def router_services() -> list[str]:
    return [n for n in meridian_services() if command_of(services()[n])[0] == "router"]


def control_plane_services() -> list[str]:
    return [n for n in meridian_services() if command_of(services()[n])[0] == "control-plane"]


def toxiproxy_proxies() -> dict[int, dict[str, Any]]:
    """deploy/toxiproxy.json as mounted into the toxiproxy service, by listen port."""
    service = services()["toxiproxy"]
    config = option(command_of(service), "-config")
    assert config, "the toxiproxy service must be started with -config (its proxies)"
    path = host_path(service, config)
    assert path is not None and path.is_file(), f"toxiproxy -config {config} is not mounted from the repository"
    document = json.loads(path.read_text())
    parse_populate(document)  # Meridian's Toxiproxy-compatible parser: Toxiproxy's own validation rules
    return {int(p["listen"].rsplit(":", 1)[1]): p for p in document}


def listening_ports(name: str, monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The ports the service's process listens on inside its container."""
    service = services()[name]
    if is_meridian(service):
        command = command_of(service)
        if command[0] == "sim-backend":
            return {int(option(command, "--port") or 8000)}
        if command[0] == "toxiproxy-server":
            return {int(option(command, "--port") or 8474)}
        config = load_service_config(name, monkeypatch)
        if isinstance(config, RouterConfig):
            return {int(option(command, "--port") or config.listen.port)}
        return {config.grpc.port, config.admin.port, config.admin.grpc_port}
    image = str(service.get("image", "")).rsplit(":", 1)[0]
    if name == "toxiproxy":
        return {int(option(command_of(service), "-port") or 8474), *toxiproxy_proxies()}
    if image in IMAGE_PORTS:
        return set(IMAGE_PORTS[image])
    return set()


# --- the compose file itself -------------------------------------------------------------------------------------


def test_compose_file_is_well_formed() -> None:
    document = load_compose()
    allowed = {"name", "services", "volumes", "networks", "configs", "secrets"}
    unknown = [key for key in document if key not in allowed and not key.startswith("x-")]
    assert not unknown, f"unknown top-level keys {unknown}"
    all_services = document["services"]
    assert all_services, "no services"
    for name, service in all_services.items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name), f"service name {name!r} is not a valid DNS label"
        assert "image" in service or "build" in service, f"service {name}: neither image nor build"
        for dependency, condition in dependencies_of(service).items():
            assert dependency in all_services, f"service {name} depends on unknown service {dependency!r}"
            assert dependency != name, f"service {name} depends on itself"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully"), (
                f"service {name}: unknown condition {condition!r} on {dependency}")
            if condition == "service_healthy":
                assert "healthcheck" in all_services[dependency], (
                    f"service {name} waits for {dependency} to be healthy, but {dependency} has no healthcheck")
            if "profiles" not in service:
                assert "profiles" not in all_services[dependency], (
                    f"service {name} always starts but depends on {dependency}, which only starts with a profile")
        healthcheck = service.get("healthcheck")
        if healthcheck is not None:
            test = healthcheck["test"]
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL", "NONE"), (
                f"service {name}: healthcheck.test must be a list starting with CMD, CMD-SHELL or NONE")


def test_the_admin_token_has_no_default() -> None:
    """A default would be a token everyone knows, opening the admin API and the routers' /cache endpoints."""
    holders = [name for name in meridian_services()
               if "MERIDIAN_ADMIN_TOKEN" in (services()[name].get("environment") or {})]
    assert set(router_services()) | set(control_plane_services()) <= set(holders)
    for name in holders:
        raw = str(services()[name]["environment"]["MERIDIAN_ADMIN_TOKEN"])
        with pytest.raises(UnsetVariable, match="MERIDIAN_ADMIN_TOKEN"):
            compose_value(raw, {})
        with pytest.raises(UnsetVariable, match="MERIDIAN_ADMIN_TOKEN"):
            compose_value(raw, {"MERIDIAN_ADMIN_TOKEN": ""})
        assert compose_value(raw, {"MERIDIAN_ADMIN_TOKEN": "s3cret"}) == "s3cret"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored, ".env holds the token: it must stay out of the image's build context"


def test_grafana_has_no_default_admin_password() -> None:
    """admin / admin is the first password anyone tries."""
    raw = str(services()["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"])
    for environment in ({}, {"GRAFANA_ADMIN_PASSWORD": ""}):
        with pytest.raises(UnsetVariable, match="GRAFANA_ADMIN_PASSWORD"):
            compose_value(raw, environment)
    assert compose_value(raw, {"GRAFANA_ADMIN_PASSWORD": "s3cret"}) == "s3cret"


def test_etcd_compacts_its_history_as_the_launcher_does() -> None:
    """Without compaction etcd keeps every revision until its quota raises NOSPACE."""
    command = command_of(services()["etcd"])
    assert option(command, "--auto-compaction-mode") == "periodic"
    retention = option(command, "--auto-compaction-retention") or "0"
    match = re.fullmatch(r"(\d+)([smh])", retention)
    assert match, f"--auto-compaction-retention={retention}: expected a duration such as 5m"
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    assert seconds == local_services.COMPACTION_RETENTION_S, "compose and `meridian up` keep the same history"


def test_every_required_component_is_a_service() -> None:
    all_services = services()
    images = {name: str(service.get("image", "")) for name, service in all_services.items()}
    for wanted in ("quay.io/coreos/etcd:v3.5", "redis:7", "ghcr.io/shopify/toxiproxy:2.", "prom/prometheus",
                   "grafana/grafana"):
        assert any(image.startswith(wanted) for image in images.values()), f"no service runs {wanted}"
    assert len(control_plane_services()) >= 2, "the control plane needs two replicas"
    commands = {n: command_of(all_services[n])[0] for n in meridian_services()}
    assert "sim-backend" in commands.values(), "no simulated backend"
    assert any("ollama" in image or "vllm" in image for image in images.values()), "no real-server profile"
    for name, service in all_services.items():
        if "ollama" in images[name] or "vllm" in images[name]:
            assert "profiles" in service, f"{name} must only start with its profile"


def test_port_mappings_are_valid_and_reach_a_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    published: dict[tuple[str, int], str] = {}
    for name, service in services().items():
        for entry in service.get("ports", []):
            try:
                mapping = parse_port(entry)
            except (ValueError, KeyError) as error:
                pytest.fail(f"service {name}: invalid port mapping {entry!r}: {error}")
            if mapping.published is not None:
                key = (mapping.host_ip or "0.0.0.0", mapping.published)
                assert key not in published, f"host port {key} published by both {published[key]} and {name}"
                published[key] = name
            ports = listening_ports(name, monkeypatch)
            if ports:
                assert mapping.target in ports, (
                    f"service {name}: port mapping {entry!r} targets {mapping.target}, but it listens on {ports}")


def test_mounted_files_exist_and_named_volumes_are_declared() -> None:
    declared = set(load_compose().get("volumes") or {})
    for name, service in services().items():
        for mount in mounts_of(service):
            if mount.bind:
                source = (ROOT / mount.source).resolve()
                assert source.exists(), f"service {name} mounts {mount.source}, which does not exist"
                assert ROOT in source.parents, f"service {name} mounts {mount.source}, outside the repository"
            elif mount.source:
                assert mount.source in declared, f"service {name} uses volume {mount.source!r}, not declared"


def test_dockerfile_installs_the_project_with_meridian_as_entrypoint() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["meridian"\]', dockerfile, re.M)
    for name in meridian_services():
        service = services()[name]
        assert service.get("build") in (".", {"context": "."}), f"service {name} must build the repository's image"
        assert "entrypoint" not in service, f"service {name} must run `meridian` (the image's entrypoint)"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored, ".dockerignore must keep .venv and .git out of the context"


# --- Meridian commands and their configs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", meridian_services())
def test_meridian_command_is_a_valid_cli_invocation(name: str) -> None:
    command = command_of(services()[name])
    assert command, f"service {name} has no command (the image would only print --help)"
    try:
        args = build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"service {name}: `meridian {shlex.join(command)}` is not a valid invocation")
    assert args.command == command[0]


@pytest.mark.parametrize("name", meridian_services())
def test_meridian_service_listens_beyond_loopback(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a container 127.0.0.1 is the container itself: a listener there is unreachable."""
    service = services()[name]
    command = command_of(service)
    if command[0] in ("sim-backend", "toxiproxy-server"):
        host = option(command, "--host") or "127.0.0.1"
        assert host not in _CONTAINER_LOOPBACK, f"service {name} listens on {host}: add --host 0.0.0.0"
        return
    config = load_service_config(name, monkeypatch)
    if isinstance(config, RouterConfig):
        host = option(command, "--host") or config.listen.host
        assert host not in _CONTAINER_LOOPBACK, f"service {name}: listen.host is {host}"
    else:
        for listener in (config.grpc, config.admin):
            assert listener.host not in _CONTAINER_LOOPBACK, f"service {name}: a listener is on {listener.host}"


@pytest.mark.parametrize("name", [n for n in meridian_services() if option(command_of(services()[n]), "--config")])
def test_meridian_config_loads_with_the_service_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_service_config(name, monkeypatch)
    if isinstance(config, ControlPlaneConfig):
        assert replica_id(name, config), f"service {name}: no replica id (--replica-id or replica_id)"


def replica_id(name: str, config: ControlPlaneConfig) -> str | None:
    return option(command_of(services()[name]), "--replica-id") or config.replica_id


def test_replicas_have_distinct_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = []
    for name in control_plane_services():
        with monkeypatch.context() as patch:
            config = load_service_config(name, patch)
        assert isinstance(config, ControlPlaneConfig)
        ids.append(replica_id(name, config))
    assert len(set(ids)) == len(ids), f"replica ids repeat: {ids}"


def _resolve(url_host: str, url_port: int, proxies: Mapping[int, Mapping[str, Any]]) -> tuple[str, int]:
    """Where a connection to host:port ends up: through Toxiproxy to the proxy's upstream."""
    if url_host == "toxiproxy":
        assert url_port in proxies, f"toxiproxy:{url_port} is not a proxy of deploy/toxiproxy.json"
        upstream_host, upstream_port = proxies[url_port]["upstream"].rsplit(":", 1)
        return upstream_host, int(upstream_port)
    return url_host, url_port


def _assert_reaches(what: str, url: str, service: str, ports: set[int], proxies: Mapping[int, Any]) -> None:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    assert parts.hostname and parts.port, f"{what}: {url!r} has no host:port"
    host, port = _resolve(parts.hostname, parts.port, proxies)
    assert host == service, f"{what}: {url} reaches {host}, expected {service}"
    assert port in ports, f"{what}: {url} reaches {host}:{port}, but {service} listens on {sorted(ports)}"


def test_every_link_reaches_the_right_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Router → backends, Redis and replicas; replica → etcd and Redis: directly or through a Toxiproxy proxy."""
    all_services = services()
    proxies = toxiproxy_proxies()
    for proxy in proxies.values():
        host = proxy["upstream"].rsplit(":", 1)[0]
        assert host in all_services, f"proxy {proxy['name']}: upstream host {host!r} is not a service"
    sim_by_url = {}
    for name in meridian_services():
        if command_of(all_services[name])[0] == "sim-backend":
            sim_by_url[name] = listening_ports(name, monkeypatch)
    redis_ports = listening_ports("redis", monkeypatch)
    etcd_ports = listening_ports("etcd", monkeypatch)
    catalog = _catalog(monkeypatch)
    for name in router_services():
        router = load_service_config(name, monkeypatch)
        assert isinstance(router, RouterConfig)
        assert router.redis_url, f"{name}: no redis_url (telemetry)"
        _assert_reaches(f"{name} redis_url", router.redis_url, "redis", redis_ports, proxies)
        assert router.control_plane is not None, f"{name}: no control_plane link"
        replicas = set()
        for target in router.control_plane.targets:
            host, _ = _resolve(*_host_port(target), proxies)
            assert host in control_plane_services(), f"{name}: control-plane target {target} reaches {host}"
            with monkeypatch.context() as patch:
                replica = load_service_config(host, patch)
            assert isinstance(replica, ControlPlaneConfig)
            _assert_reaches(f"{name} control-plane target", target, host, {replica.grpc.port}, proxies)
            replicas.add(host)
        assert replicas == set(control_plane_services()), f"{name} does not subscribe to every replica"
        for model in router.models.values():
            for deployment in model.deployments:
                url = str(deployment.url)
                host, _ = _resolve(*_host_port(url), proxies)
                assert host in sim_by_url, f"{name}: deployment {deployment.name} reaches {host}, not a backend"
                _assert_reaches(f"{name} deployment {deployment.name}", url, host, sim_by_url[host], proxies)
                expected = catalog.get(deployment.name)
                assert expected is not None, f"{name}: deployment {deployment.name} is not in the catalog"
                catalog_url = str(expected.urls_by_region.get(router.region, expected.url))
                assert catalog_url.rstrip("/") == url.rstrip("/"), (
                    f"{name}: deployment {deployment.name} is {url}; the catalog gives {router.region} {catalog_url}")
                for field in ("region", "architecture", "served_model", "cost_per_1m_input", "cost_per_1m_output"):
                    assert getattr(deployment, field) == getattr(expected, field), (
                        f"{name}: deployment {deployment.name}.{field} differs from the control plane's catalog")
    for name in control_plane_services():
        with monkeypatch.context() as patch:
            replica = load_service_config(name, patch)
        assert isinstance(replica, ControlPlaneConfig)
        for endpoint in replica.etcd.endpoints:
            _assert_reaches(f"{name} etcd", endpoint, "etcd", etcd_ports, proxies)
        _assert_reaches(f"{name} redis_url", replica.redis_url, "redis", redis_ports, proxies)
        for deployment in (d for m in replica.models.values() for d in m.deployments):
            for url in (deployment.url, *deployment.urls_by_region.values()):
                host, _ = _resolve(*_host_port(str(url)), proxies)
                assert host in sim_by_url, f"{name}: catalog deployment {deployment.name} reaches {host}"
                _assert_reaches(f"{name} catalog deployment {deployment.name}", str(url), host, sim_by_url[host],
                                proxies)
            unknown = set(deployment.urls_by_region) - set(replica.regions)
            assert not unknown, f"{name}: {deployment.name}.urls_by_region names unknown regions {unknown}"


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    assert parts.hostname and parts.port, f"{address!r} has no host:port"
    return parts.hostname, parts.port


def _catalog(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    with monkeypatch.context() as patch:
        config = load_service_config(control_plane_services()[0], patch)
    assert isinstance(config, ControlPlaneConfig)
    return {d.name: d for m in config.models.values() for d in m.deployments}


def test_every_catalog_region_has_a_router(monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        config = load_service_config(control_plane_services()[0], patch)
    assert isinstance(config, ControlPlaneConfig)
    regions = []
    for name in router_services():
        with monkeypatch.context() as patch:
            router = load_service_config(name, patch)
        assert isinstance(router, RouterConfig)
        regions.append(router.region)
    assert sorted(regions) == sorted(config.regions), "one router per catalog region"


def test_compose_runs_the_launchers_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same topology as `meridian up` (regions/topology.yaml): regions and RTTs, backends and their
    simulator settings, prices and limits, and the model's routing defaults."""
    topology_module = pytest.importorskip("regions.topology")
    topology = topology_module.load_topology(ROOT / "regions" / "topology.yaml")
    with monkeypatch.context() as patch:
        config = load_service_config(control_plane_services()[0], patch)
    assert isinstance(config, ControlPlaneConfig)
    assert set(config.regions) == set(topology.regions)
    for region in topology.regions:
        for other in topology.regions:
            assert config.rtt_ms(region, other) == topology.rtt_ms(region, other), f"RTT {region} - {other}"
    assert set(config.models) == set(topology.models)
    for name, spec in topology.models.items():
        model = config.models[name]
        for field in ("policy", "latency_budget_ms", "priority", "local_ratio", "breaker", "cache"):
            assert getattr(model, field) == getattr(spec, field), f"model {name}.{field} differs from the topology"
    catalog = _catalog(monkeypatch)
    simulators = {n.removeprefix("sim-"): command_of(services()[n]) for n in meridian_services()
                  if command_of(services()[n])[0] == "sim-backend"}
    assert set(catalog) == {b.name for _, b in topology.backends()} == set(simulators), (
        "catalog deployments, simulator services (sim-<backend>) and topology backends differ")
    for home, backend in topology.backends():
        deployment = catalog[backend.name]
        assert (deployment.region, deployment.architecture, deployment.served_model) == (
            home, backend.profile, backend.served_model or backend.model), backend.name
        for field in ("cost_per_1m_input", "cost_per_1m_output", "quality", "max_concurrency"):
            assert getattr(deployment, field) == getattr(backend, field), f"{backend.name}.{field}"
        argv = simulators[backend.name]
        assert option(argv, "--model") == backend.model, backend.name
        assert option(argv, "--profile") == backend.profile, backend.name
        assert float(option(argv, "--ttft-ms") or "nan") == backend.ttft_ms, backend.name
        assert float(option(argv, "--itl-ms") or "nan") == backend.itl_ms, backend.name
        assert int(option(argv, "--capacity") or 0) == backend.capacity, backend.name
        prefill = option(argv, "--prefill-ms-per-1k")
        assert (None if prefill is None else float(prefill)) == backend.prefill_ms_per_1k, backend.name


# --- Toxiproxy -----------------------------------------------------------------------------------------------------


def test_toxiproxy_serves_its_api_beyond_loopback_and_has_unique_proxies() -> None:
    command = command_of(services()["toxiproxy"])
    # With -config and no -host, Toxiproxy's API listens on localhost only (Shopify/toxiproxy#516).
    assert option(command, "-host") == "0.0.0.0", "toxiproxy needs -host=0.0.0.0 next to -config"
    document = json.loads((ROOT / "deploy" / "toxiproxy.json").read_text())
    names = [proxy["name"] for proxy in document]
    assert len(set(names)) == len(names), "proxy names repeat"
    assert len(toxiproxy_proxies()) == len(document), "proxy listen ports repeat"
    for proxy in document:
        host = proxy["listen"].rsplit(":", 1)[0]
        assert host not in _CONTAINER_LOOPBACK, f"proxy {proxy['name']} listens on loopback, unreachable"


def test_latency_toxics_name_proxies_and_match_the_catalog_rtts(monkeypatch: pytest.MonkeyPatch) -> None:
    service = services()["toxiproxy-latency"]
    script = host_path(service, command_of({"command": service["entrypoint"]})[-1])
    assert script == LATENCY_SCRIPT.resolve(), "the toxiproxy-latency service must run deploy/toxiproxy-latency.sh"
    proxies = {proxy["name"]: proxy for proxy in toxiproxy_proxies().values()}
    with monkeypatch.context() as patch:
        config = load_service_config(control_plane_services()[0], patch)
    assert isinstance(config, ControlPlaneConfig)
    catalog = _catalog(monkeypatch)
    calls = re.findall(r"^add_latency (\S+) (\d+) (\d+)\b", LATENCY_SCRIPT.read_text(), re.M)
    assert calls, "deploy/toxiproxy-latency.sh adds no latency"
    cross_region = {name for name in proxies if name.startswith("xregion-")}
    assert {name for name, _, _ in calls} == cross_region, "every cross-region proxy gets its RTT, and only those"
    for name, upstream_ms, downstream_ms in calls:
        source_region = next((r for r in config.regions if name.startswith(f"xregion-{r}-")), None)
        assert source_region is not None, f"{name}: not xregion-<region>-<backend> with a catalog region"
        deployment = catalog.get(name.removeprefix(f"xregion-{source_region}-"))
        assert deployment is not None, f"{name}: no catalog deployment of that name"
        assert deployment.region != source_region, f"{name}: a cross-region proxy within one region"
        host = proxies[name]["upstream"].rsplit(":", 1)[0]
        assert urlsplit(str(deployment.urls_by_region[source_region])).port in {
            port for port, proxy in toxiproxy_proxies().items() if proxy["name"] == name}, (
            f"{source_region} routers do not call {deployment.name} through {name}")
        assert host.startswith("sim-"), f"{name}: upstream {host} is not a backend"
        rtt = config.rtt_ms(source_region, deployment.region)
        assert int(upstream_ms) + int(downstream_ms) == rtt, f"{name}: {upstream_ms} + {downstream_ms} ms != RTT {rtt}"
        assert abs(int(upstream_ms) - int(downstream_ms)) <= 1, f"{name}: RTT/2 each way"


# --- Prometheus and Grafana ------------------------------------------------------------------------------------


def _mounted_file(name: str, container_path: str) -> Path:
    path = host_path(services()[name], container_path)
    assert path is not None and path.exists(), f"service {name}: {container_path} is not mounted from the repository"
    return path


def test_prometheus_scrapes_every_router_and_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    command = command_of(services()["prometheus"])
    config_file = option(command, "--config.file") or "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load(_mounted_file("prometheus", config_file).read_text())
    scraped: set[str] = set()
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(set(jobs)) == len(jobs), "job names repeat"
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = _host_port(target)
                if host == "localhost" and job["job_name"] == "prometheus":
                    continue
                assert host in services(), f"job {job['job_name']}: target {target} is not a service"
                ports = listening_ports(host, monkeypatch)
                assert not ports or port in ports, f"job {job['job_name']}: {host} does not listen on {port}"
                scraped.add(host)
    for name in router_services():
        assert name in scraped, f"router {name} is not scraped"
    for name in control_plane_services():
        assert name in scraped, f"control-plane replica {name} is not scraped"
        with monkeypatch.context() as patch:
            replica = load_service_config(name, patch)
        assert isinstance(replica, ControlPlaneConfig)
        assert f"{name}:{replica.admin.port}" in {t for j in config["scrape_configs"]
                                                   for s in j.get("static_configs", []) for t in s["targets"]}, (
            f"{name} must be scraped on its admin HTTP port {replica.admin.port}")


def _grafana_provisioning() -> tuple[Path, Path]:
    datasource_dir = _mounted_file("grafana", "/etc/grafana/provisioning/datasources")
    dashboards_dir = _mounted_file("grafana", "/etc/grafana/provisioning/dashboards")
    return datasource_dir, dashboards_dir


def _provisioned_datasource() -> dict[str, Any]:
    datasource_dir, _ = _grafana_provisioning()
    found = [d for f in sorted(datasource_dir.glob("*.yaml"))
             for d in yaml.safe_load(f.read_text()).get("datasources", [])]
    assert len(found) == 1, f"expected one provisioned datasource, found {len(found)}"
    return found[0]


def test_grafana_provisioning_points_at_existing_services_and_files(monkeypatch: pytest.MonkeyPatch) -> None:
    datasource = _provisioned_datasource()
    assert datasource["type"] == "prometheus" and datasource.get("uid")
    host, port = _host_port(datasource["url"])
    assert host == "prometheus" and port in listening_ports("prometheus", monkeypatch), datasource["url"]
    _, dashboards_dir = _grafana_provisioning()
    providers = [p for f in sorted(dashboards_dir.glob("*.yaml"))
                 for p in yaml.safe_load(f.read_text()).get("providers", [])]
    assert providers, "no dashboard provider"
    for provider in providers:
        assert provider["type"] == "file"
        folder = _mounted_file("grafana", provider["options"]["path"])
        assert folder.is_dir() and DASHBOARD_FILE.resolve() in folder.glob("*.json"), (
            f"provider {provider['name']}: {provider['options']['path']} does not hold meridian.json")
    home = environment_of(services()["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert _mounted_file("grafana", home) == DASHBOARD_FILE.resolve()


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def _queries(dashboard: Mapping[str, Any]) -> Iterator[str]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield query["query"] if isinstance(query, dict) else str(query or "")


def dashboard_metric_names() -> set[str]:
    return {name for query in _queries(_dashboard()) for name in _METRIC_NAME.findall(query)}


def test_dashboard_is_valid_and_uses_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    uid = _provisioned_datasource()["uid"]
    assert dashboard.get("uid") and dashboard.get("title")
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Request share per architecture", "Request share per deployment", "Breaker events",
                   "Table version per router", "Control-plane leader"):
        assert wanted in titles, f"no panel {wanted!r}"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']} is wider than the grid"
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['title']}: empty query"
            assert target["expr"].count("(") == target["expr"].count(")"), f"panel {panel['title']}: unbalanced ()"
            assert target["datasource"]["uid"] == uid, f"panel {panel['title']}: not the provisioned datasource"
        assert panel["datasource"]["uid"] == uid
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
        used = any(f"${variable['name']}" in expr for expr in _queries(dashboard))
        assert used, f"variable {variable['name']} is used by no query"


def test_dashboard_metrics_are_declared() -> None:
    """Without starting anything: every router name the dashboard uses is declared in data_plane/metrics.py,
    and every control-plane name is in the list the control plane is expected to export."""
    declared = set()
    for family in RouterMetrics().registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        declared.update(family.name + suffix for suffix in suffixes)
    names = dashboard_metric_names()
    router_names = {n for n in names if n.startswith("meridian_") and not n.startswith("meridian_cp_")}
    assert router_names <= declared, f"not declared by the router: {sorted(router_names - declared)}"
    cp_names = {n for n in names if n.startswith("meridian_cp_")}
    unlisted = sorted(cp_names - set(CONTROL_PLANE_METRICS))
    assert not unlisted, f"control-plane metrics not in CONTROL_PLANE_METRICS: {unlisted}"


# --- the metrics, from real processes ---------------------------------------------------------------------------


def _meridian(*args: str) -> list[str]:
    return [sys.executable, "-m", "meridian_cli.main", *args]


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def exported_names(url: str, token: str | None = None) -> set[str]:
    """Names of the samples a /metrics endpoint exports (a labelled metric with no child yet has none)."""
    status, _, body = _http("GET", f"{url}/metrics", token=token)
    assert status == 200, f"GET {url}/metrics answered {status}: {body[:200]!r}"
    return {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}


def _wait_for_names(url: str, wanted: set[str], timeout_s: float, token: str | None = None) -> set[str]:
    """The wanted names still missing from url's /metrics after at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    missing = wanted - exported_names(url, token)
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = wanted - exported_names(url, token)
    return missing


@pytest.fixture(scope="module")
def metrics_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compose-metrics")


@pytest.fixture(scope="module")
def router_stack(metrics_workdir: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """A router over a broken (cheapest) and a healthy simulator; its breaker opens after 2 failures."""
    started: list[ServiceProcess] = []
    try:
        broken = start_service("sim-broken", _meridian("sim-backend", "--port", "0", "--model", "m",
                                                       "--ttft-ms", "1", "--itl-ms", "0", "--error-rate", "1.0"),
                               metrics_workdir)
        started.append(broken)
        healthy = start_service("sim-healthy", _meridian("sim-backend", "--port", "0", "--model", "m",
                                                         "--ttft-ms", "2", "--itl-ms", "1"), metrics_workdir)
        started.append(healthy)
        config = metrics_workdir / "router.yaml"
        config.write_text(f"""region: test
listen: {{host: 127.0.0.1, port: 0}}
max_attempts: 3
health_check: {{interval_s: 0.2, timeout_s: 1, healthy_after: 1, unhealthy_after: 2}}
models:
  m:
    policy: cost-first
    breaker: {{error_rate_threshold: 0.5, min_requests: 2, open_duration_s: 60, window_s: 30}}
    deployments:
      - {{name: broken, url: "{broken.url}/v1", served_model: m, region: test, architecture: moe,
          cost_per_1m_input: 0.01, cost_per_1m_output: 0.01}}
      - {{name: healthy, url: "{healthy.url}/v1", served_model: m, region: test, architecture: dense,
          cost_per_1m_input: 1.0, cost_per_1m_output: 2.0}}
""")
        router = start_service("router", _meridian("router", "--config", str(config), "--port", "0"),
                               metrics_workdir, health_path="/ready")
        started.append(router)
        yield router, healthy
    finally:
        for service in reversed(started):
            service.stop()


def test_running_router_and_backend_export_every_dashboard_metric(
    router_stack: tuple[ServiceProcess, ServiceProcess],
) -> None:
    router, backend = router_stack
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for _ in range(3):  # each fails over from the broken deployment until its breaker opens
        status, headers, body = _http("POST", f"{router.url}/v1/chat/completions", chat)
        assert status == 200, body[:300]
        assert headers["x-meridian-backend"] == "healthy"
    status, _, body = _http("POST", f"{router.url}/v1/chat/completions",
                            {**chat, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and b"data: [DONE]" in body, body[:300]

    names = dashboard_metric_names()
    router_names = {n for n in names if n.startswith("meridian_") and not n.startswith("meridian_cp_")}
    backend_names = {n for n in names if n.startswith(("vllm:", "sim_"))}
    assert router_names, "the dashboard queries no router metric"
    missing = _wait_for_names(router.url, router_names, timeout_s=10)
    assert not missing, f"the dashboard queries metrics a running router does not export: {sorted(missing)}"
    missing = _wait_for_names(backend.url, backend_names, timeout_s=5)
    assert not missing, f"the dashboard queries metrics a running simulator does not export: {sorted(missing)}"
    transitions = [s for f in text_string_to_metric_families(_http("GET", f"{router.url}/metrics")[2].decode())
                   for s in f.samples if s.name == "meridian_breaker_transitions_total"]
    assert any(s.labels["to_state"] == "open" and s.value >= 1 for s in transitions), transitions


def test_running_control_plane_exports_every_dashboard_metric(
    request: pytest.FixtureRequest, metrics_workdir: Path,
) -> None:
    """A real replica (etcd and Redis from tests/fixtures/services.py): its admin listener's /metrics, read
    without a token as Prometheus reads it, has every control-plane metric the dashboard queries."""
    names = {n for n in dashboard_metric_names() if n.startswith("meridian_cp_")}
    assert names <= set(CONTROL_PLANE_METRICS)
    etcd = request.getfixturevalue("etcd")
    redis_server = request.getfixturevalue("redis_server")
    token = "compose-test-admin-token"
    config = metrics_workdir / "control-plane.yaml"
    config.write_text(f"""etcd: {{endpoints: ["{etcd.url}"], prefix: /compose-test}}
redis_url: {redis_server.url}
grpc: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0, grpc_port: 0, token_env: COMPOSE_TEST_ADMIN_TOKEN}}
lease_ttl_s: 2
tick_s: 0.5
telemetry_window_s: 2
regions: {{test: {{}}}}
models:
  m:
    deployments:
      - {{name: a, url: "http://127.0.0.1:9/v1", served_model: m, region: test}}
""")
    replica = start_service("control-plane", _meridian("control-plane", "--config", str(config), "--replica-id",
                                                      "compose-test-cp"),
                            metrics_workdir, env={"COMPOSE_TEST_ADMIN_TOKEN": token})
    try:
        status, _, _ = _http("GET", f"{replica.url}/metrics", token=token)
        if status == 404:
            pytest.skip("the control plane serves no /metrics yet: the dashboard's control-plane metrics "
                        f"{sorted(names)} are only checked against CONTROL_PLANE_METRICS")
        status, _, body = _http("GET", f"{replica.url}/metrics")
        assert status == 200, (f"GET /metrics without a token answered {status} {body[:200]!r}: Prometheus "
                               "scrapes the replicas without one, so /metrics must be open like /health")
        missing = _wait_for_names(replica.url, names, timeout_s=10)
        assert not missing, f"the dashboard queries metrics a running replica does not export: {sorted(missing)}"
    finally:
        replica.stop()
