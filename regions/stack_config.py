"""Pure generation of a local stack's wiring: which Toxiproxy proxies exist (name, upstream, latency toxics)
and every config file (control-plane replicas, routers) given the addresses that were bound.

No I/O: the launcher starts processes, creates the proxies this module plans, and writes the documents it
returns. Every link a chaos scenario may break is a proxy here, so its name is the handle to break it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meridian_common.workload import REALISTIC, simulator_flags
from regions.topology import BackendSpec, Topology

LOOPBACK = "127.0.0.1"
ETCD_PROXY = "etcd"
REDIS_CP_PROXY = "redis-cp"
ADMIN_TOKEN_ENV = "MERIDIAN_ADMIN_TOKEN"
ETCD_PREFIX = "/meridian"
# Probes every 2 s, two in a row to change state: a dead backend leaves within about 4 s.
ROUTER_HEALTH_CHECK = {"interval_s": 2, "timeout_s": 1, "healthy_after": 2, "unhealthy_after": 2}


def redis_proxy_name(region: str) -> str:
    return f"redis-{region}"


def backend_proxy_name(backend: str) -> str:
    return f"backend-{backend}"


def xregion_proxy_name(from_region: str, backend: str) -> str:
    return f"xregion-{from_region}-{backend}"


def cp_grpc_proxy_name(region: str, replica: str) -> str:
    # Per region as well as per replica, so that a scenario can cut one region off the control plane.
    return f"cp-grpc-{region}-{replica}"


def split_rtt_ms(rtt_ms: float) -> tuple[int, int]:
    """(upstream, downstream) latency of a link whose round trip is `rtt_ms`: half each way, and the two
    halves add up to the (rounded) RTT even when it is odd."""
    total = max(0, round(rtt_ms))
    return total // 2, total - total // 2


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One Toxiproxy proxy: `kind` says which link it carries; the other fields locate it in the stack."""

    name: str
    upstream: str
    kind: str
    region: str | None = None
    """The region whose routers use this link (None for control-plane links)."""
    to_region: str | None = None
    backend: str | None = None
    replica: str | None = None
    latency_upstream_ms: int = 0
    latency_downstream_ms: int = 0

    def toxics(self) -> list[dict[str, Any]]:
        """The latency toxics, in Toxiproxy's JSON (field names exactly as Toxiproxy has them)."""
        return [
            {"name": f"latency_{stream}", "type": "latency", "stream": stream, "toxicity": 1.0,
             "attributes": {"latency": latency, "jitter": 0}}
            for stream, latency in (("upstream", self.latency_upstream_ms),
                                    ("downstream", self.latency_downstream_ms))
            if latency > 0
        ]

    def describe(self, listen: str) -> dict[str, Any]:
        """This proxy's entry in stack.json."""
        entry: dict[str, Any] = {"listen": listen, "upstream": self.upstream, "kind": self.kind}
        for key in ("region", "to_region", "backend", "replica"):
            if (value := getattr(self, key)) is not None:
                entry[key] = value
        if self.latency_upstream_ms or self.latency_downstream_ms:
            entry["latency_ms"] = {"upstream": self.latency_upstream_ms, "downstream": self.latency_downstream_ms}
        return entry


def host_port(url: str) -> str:
    """`host:port` of a URL (default port by scheme)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"{url!r} has no host")
    port = parts.port or (443 if parts.scheme in ("https", "rediss") else 80)
    return f"{parts.hostname}:{port}"


def proxiable(url: str) -> bool:
    """Whether a backend URL can go through a TCP proxy: TLS cannot (the certificate names the real host)."""
    return urlsplit(url).scheme == "http"


def via(url: str, listen: str) -> str:
    """`url` with its host and port replaced by the proxy's `listen` address; path kept."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, listen, parts.path, parts.query, parts.fragment)).rstrip("/")


def simulator_url(address: str) -> str:
    return f"http://{address}/v1"


# --- proxy plans -----------------------------------------------------------------------------------------

def etcd_proxy_names(members: int) -> list[str]:
    """One proxy per etcd member: `etcd` for a single member, `etcd-1`, `etcd-2`... for a cluster."""
    return [ETCD_PROXY] if members == 1 else [f"{ETCD_PROXY}-{index + 1}" for index in range(members)]


def control_plane_proxies(etcd: str | Sequence[str], redis_address: str | None) -> list[ProxySpec]:
    """Control plane -> etcd (one address, or every member's) and -> Redis (None: Redis Sentinel, whose primary
    moves, so its clients ask the sentinels directly): needed before a replica starts."""
    addresses = [etcd] if isinstance(etcd, str) else list(etcd)
    names = etcd_proxy_names(len(addresses))
    redis = [ProxySpec(REDIS_CP_PROXY, redis_address, "redis-cp")] if redis_address is not None else []
    return [*(ProxySpec(name, address, "etcd") for name, address in zip(names, addresses, strict=True)), *redis]


def cp_grpc_proxies(topology: Topology, grpc_by_replica: Mapping[str, str]) -> list[ProxySpec]:
    """Routers -> each control-plane replica's table stream, one proxy per (region, replica)."""
    return [
        ProxySpec(cp_grpc_proxy_name(region, replica), address, "cp-grpc", region=region, replica=replica)
        for region in topology.regions
        for replica, address in sorted(grpc_by_replica.items())
    ]


def data_plane_proxies(topology: Topology, redis_address: str | None, backend_urls: Mapping[str, str]
                       ) -> list[ProxySpec]:
    """Routers -> Redis (per region) and -> every backend: `backend-<name>` from the backend's own region,
    `xregion-<from>-<name>` with RTT/2 of latency each way from every other region. `backend_urls` holds the
    direct base URL of every backend (simulators once started); an https backend gets no proxy."""
    specs = [ProxySpec(redis_proxy_name(region), redis_address, "redis", region=region)
             for region in topology.regions if redis_address is not None]
    for home, backend in topology.backends():
        url = backend_urls[backend.name]
        if not proxiable(url):
            continue
        upstream = host_port(url)
        specs.append(ProxySpec(backend_proxy_name(backend.name), upstream, "backend", region=home,
                               to_region=home, backend=backend.name))
        for region in topology.regions:
            if region == home:
                continue
            up, down = split_rtt_ms(topology.rtt_ms(region, home))
            specs.append(ProxySpec(xregion_proxy_name(region, backend.name), upstream, "xregion", region=region,
                                   to_region=home, backend=backend.name, latency_upstream_ms=up,
                                   latency_downstream_ms=down))
    return specs


# --- URLs as each region sees them ------------------------------------------------------------------------

def backend_url_from(region: str, home: str, backend: BackendSpec, direct_url: str,
                     listens: Mapping[str, str]) -> str:
    """The URL routers of `region` call for `backend` (which lives in `home`)."""
    if not proxiable(direct_url):
        return direct_url.rstrip("/")
    name = backend_proxy_name(backend.name) if region == home else xregion_proxy_name(region, backend.name)
    return via(direct_url, listens[name])


def _deployment(topology: Topology, region: str | None, home: str, backend: BackendSpec, direct_url: str,
                listens: Mapping[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": backend.name,
        "url": backend_url_from(region or home, home, backend, direct_url, listens),
        "served_model": backend.served_model or backend.model,
        "region": home,
        "architecture": backend.profile,
        "cost_per_1m_input": backend.cost_per_1m_input,
        "cost_per_1m_output": backend.cost_per_1m_output,
        "quality": backend.quality,
        "max_concurrency": backend.max_concurrency,
    }
    if backend.api_key_env:
        entry["api_key_env"] = backend.api_key_env
    if region is None:
        entry["urls_by_region"] = {r: backend_url_from(r, home, backend, direct_url, listens)
                                   for r in topology.regions}
    return entry


def models_section(topology: Topology, backend_urls: Mapping[str, str], listens: Mapping[str, str],
                   region: str | None) -> dict[str, Any]:
    """The `models` of a router of `region` (URLs as that region calls them), or with `region=None` the
    control plane's catalog, whose deployments carry `urls_by_region` for every region."""
    models: dict[str, Any] = {}
    for name, spec in topology.models.items():
        models[name] = {
            **spec.model_dump(mode="json"),
            "deployments": [_deployment(topology, region, home, b, backend_urls[b.name], listens)
                            for home, b in topology.backends_of(name)],
        }
    return models


# --- config documents --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ControlPlaneSettings:
    lease_ttl_s: float = 3.0
    tick_s: float = 1.0
    telemetry_window_s: float = 10.0


def control_plane_config(topology: Topology, replica_id: str, *, backend_urls: Mapping[str, str],
                         listens: Mapping[str, str], settings: ControlPlaneSettings = ControlPlaneSettings(),
                         etcd_members: int = 1, redis_url: str | None = None) -> dict[str, Any]:
    """One replica's config: etcd (every member, in order) and Redis through their proxies (Redis Sentinel:
    `redis_url`, the sentinels' URL), listeners on free ports of 127.0.0.1."""
    return {
        "replica_id": replica_id,
        "etcd": {"endpoints": [f"http://{listens[name]}" for name in etcd_proxy_names(etcd_members)],
                 "prefix": ETCD_PREFIX},
        "redis_url": redis_url or f"redis://{listens[REDIS_CP_PROXY]}/0",
        "grpc": {"host": LOOPBACK, "port": 0},
        "admin": {"host": LOOPBACK, "port": 0, "grpc_port": 0, "token_env": ADMIN_TOKEN_ENV},
        "lease_ttl_s": settings.lease_ttl_s,
        "tick_s": settings.tick_s,
        "telemetry_window_s": settings.telemetry_window_s,
        "regions": {name: {"rtt_ms": dict(region.rtt_ms)} for name, region in topology.regions.items()},
        "models": models_section(topology, backend_urls, listens, None),
    }


@dataclass(frozen=True, slots=True)
class RouterPlan:
    region: str
    router_id: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def router_ids(topology: Topology, routers_per_region: int) -> list[tuple[str, str]]:
    """(region, router id) of every router, region by region."""
    return [(region, f"{region}-{index + 1}") for region in topology.regions for index in range(routers_per_region)]


def peers(routers: Sequence[RouterPlan]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for router in routers:
        grouped.setdefault(router.region, []).append(router.url)
    return grouped


def router_config(topology: Topology, router: RouterPlan, *, all_routers: Sequence[RouterPlan],
                  replicas: Sequence[str], backend_urls: Mapping[str, str], listens: Mapping[str, str],
                  state_dir: Path, redis_url: str | None = None) -> dict[str, Any]:
    """A router of `router.region`: Redis (unless `redis_url`, the sentinels' URL), the control plane and every
    backend through their proxies."""
    region = router.region
    return {
        "region": region,
        "router_id": router.router_id,
        "listen": {"host": LOOPBACK, "port": router.port},
        "public_url": router.url,
        "admin_token_env": ADMIN_TOKEN_ENV,
        "redis_url": redis_url or f"redis://{listens[redis_proxy_name(region)]}/0",
        "control_plane": {"targets": [listens[cp_grpc_proxy_name(region, r)] for r in replicas]},
        "state_dir": str(state_dir),
        "peers": peers(all_routers),
        "health_check": dict(ROUTER_HEALTH_CHECK),
        "models": models_section(topology, backend_urls, listens, region),
    }


def simulator_argv(backend: BackendSpec, *, host: str = LOOPBACK, port: int = 0) -> list[str]:
    """`meridian sim-backend` flags of a simulated backend (the caller adds the executable); an answer without
    max_tokens has the default workload's length distribution."""
    argv = ["sim-backend", "--host", host, "--port", str(port), "--model", backend.model, "--profile", backend.profile,
            "--ttft-ms", str(backend.ttft_ms), "--itl-ms", str(backend.itl_ms), "--capacity", str(backend.capacity),
            *simulator_flags(REALISTIC)]
    if backend.seed is not None:
        argv += ["--seed", str(backend.seed)]
    # Engine sizes the topology leaves out keep the simulator's defaults (docs/simulator.md).
    for flag, value in (("--prefill-ms-per-1k", backend.prefill_ms_per_1k),
                        ("--kv-cache-tokens", backend.kv_cache_tokens),
                        ("--prefix-cache-blocks", backend.prefix_cache_blocks)):
        if value is not None:
            argv += [flag, str(value)]
    return argv
