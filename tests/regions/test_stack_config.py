"""Pure generation of a stack's wiring: the proxies planned for every link, the latency toxics (RTT/2 each way),
and control-plane and router configs that the real schemas accept, with cross-region URLs on the RTT proxies."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from control_plane.config import parse_control_plane_config
from control_plane.tables.compute import ComputeState, compute_tables
from data_plane.config import RouterConfig, bootstrap_table
from meridian_cli.sim_backend import register as register_sim_backend
from meridian_common.workload import REALISTIC
from meridian_proto import policy_pb2
from regions.stack_config import (
    ETCD_PROXY,
    REDIS_CP_PROXY,
    RouterPlan,
    backend_proxy_name,
    control_plane_config,
    control_plane_proxies,
    cp_grpc_proxies,
    cp_grpc_proxy_name,
    data_plane_proxies,
    redis_proxy_name,
    router_config,
    simulator_argv,
    split_rtt_ms,
    via,
    xregion_proxy_name,
)
from regions.topology import DEFAULT_TOPOLOGY, BackendSpec, Topology, load_topology, parse_topology

REDIS = "127.0.0.1:6379"
REPLICAS = ("cp-1", "cp-2")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(DEFAULT_TOPOLOGY)


def _backend_urls(topology: Topology) -> dict[str, str]:
    return {b.name: f"http://127.0.0.1:{9000 + i}/v1" for i, (_, b) in enumerate(topology.backends())}


def _listens(topology: Topology) -> dict[str, str]:
    specs = [*control_plane_proxies("127.0.0.1:2379", REDIS),
             *data_plane_proxies(topology, REDIS, _backend_urls(topology)),
             *cp_grpc_proxies(topology, {"cp-1": "127.0.0.1:50051", "cp-2": "127.0.0.1:50061"})]
    return {spec.name: f"127.0.0.1:{20000 + i}" for i, spec in enumerate(specs)}


@pytest.mark.parametrize(("rtt", "expected"), [(80, (40, 40)), (0, (0, 0)), (141, (70, 71)), (59.6, (30, 30))])
def test_split_rtt_halves_add_up(rtt: float, expected: tuple[int, int]) -> None:
    assert split_rtt_ms(rtt) == expected


def test_every_link_has_a_proxy(topology: Topology) -> None:
    specs = data_plane_proxies(topology, REDIS, _backend_urls(topology))
    names = {s.name for s in specs}
    for region in topology.regions:
        assert redis_proxy_name(region) in names
    for home, backend in topology.backends():
        assert backend_proxy_name(backend.name) in names
        for region in topology.regions:
            if region != home:
                assert xregion_proxy_name(region, backend.name) in names
    # 3 Redis + 6 local backends + 6 backends x 2 other regions
    assert len(specs) == 3 + 6 + 12
    assert {s.name for s in control_plane_proxies("127.0.0.1:2379", REDIS)} == {ETCD_PROXY, REDIS_CP_PROXY}
    grpc = cp_grpc_proxies(topology, {"cp-1": "127.0.0.1:1", "cp-2": "127.0.0.1:2"})
    assert {s.name for s in grpc} == {cp_grpc_proxy_name(r, c) for r in topology.regions for c in REPLICAS}


def test_cross_region_toxics_are_half_the_rtt_each_way(topology: Topology) -> None:
    for spec in data_plane_proxies(topology, REDIS, _backend_urls(topology)):
        if spec.kind != "xregion":
            assert spec.toxics() == []
            continue
        assert spec.region is not None and spec.to_region is not None and spec.region != spec.to_region
        rtt = topology.rtt_ms(spec.region, spec.to_region)
        toxics = {t["stream"]: t for t in spec.toxics()}
        assert set(toxics) == {"upstream", "downstream"}
        for toxic in toxics.values():
            assert toxic["type"] == "latency" and toxic["toxicity"] == 1.0
            assert toxic["attributes"]["latency"] == rtt / 2
            assert toxic["attributes"]["jitter"] == 0


def test_xregion_proxies_point_at_the_backend(topology: Topology) -> None:
    urls = _backend_urls(topology)
    for spec in data_plane_proxies(topology, REDIS, urls):
        if spec.backend is not None:
            assert urls[spec.backend] == f"http://{spec.upstream}/v1"


def test_https_backends_are_not_proxied() -> None:
    topology = parse_topology({
        "regions": {"a": {"rtt_ms": {"b": 10}, "backends": [
            {"name": "tls", "model": "m", "url": "https://api.example.com/v1", "served_model": "x"}]},
                    "b": {"backends": [{"name": "sim", "model": "m"}]}},
        "models": {"m": {}},
    }, "inline")
    urls = {"tls": "https://api.example.com/v1", "sim": "http://127.0.0.1:9000/v1"}
    names = {s.name for s in data_plane_proxies(topology, REDIS, urls)}
    assert "backend-tls" not in names and "xregion-b-tls" not in names
    assert "xregion-a-sim" in names


def test_via_keeps_the_path() -> None:
    assert via("http://10.0.0.5:8000/v1/", "127.0.0.1:3000") == "http://127.0.0.1:3000/v1"


def test_control_plane_config_is_valid_and_lists_each_regions_url(topology: Topology) -> None:
    listens = _listens(topology)
    document = control_plane_config(topology, "cp-1", backend_urls=_backend_urls(topology), listens=listens)
    config = parse_control_plane_config(document, "generated")
    assert config.etcd.endpoints == (f"http://{listens[ETCD_PROXY]}",)
    assert config.redis_url == f"redis://{listens[REDIS_CP_PROXY]}/0"
    assert config.rtt_ms("us-east", "ap-south") == 200
    deployments = {d.name: d for d in config.models["llama-3.3-70b"].deployments}
    assert set(deployments) == {b.name for _, b in topology.backends()}
    eu_moe = deployments["eu-moe"]
    assert str(eu_moe.urls_by_region["eu-west"]).rstrip("/") == f"http://{listens['backend-eu-moe']}/v1"
    assert str(eu_moe.urls_by_region["us-east"]).rstrip("/") == f"http://{listens['xregion-us-east-eu-moe']}/v1"


def test_control_plane_tables_use_each_regions_proxy(topology: Topology) -> None:
    listens = _listens(topology)
    config = parse_control_plane_config(
        control_plane_config(topology, "cp-1", backend_urls=_backend_urls(topology), listens=listens), "generated")
    tables, _ = compute_tables(config, policy_pb2.PolicyDocument(), {}, ComputeState(), now=1000.0)
    for region, table in tables.items():
        for deployment in table.models[0].deployments:
            proxy = (backend_proxy_name(deployment.name) if deployment.region == region
                     else xregion_proxy_name(region, deployment.name))
            assert deployment.url == f"http://{listens[proxy]}/v1"
            assert deployment.added_latency_ms == topology.rtt_ms(region, deployment.region)


def test_router_config_is_valid_and_wired_through_proxies(topology: Topology, tmp_path: Path) -> None:
    listens = _listens(topology)
    plans = [RouterPlan(region, f"{region}-1", 30000 + i) for i, region in enumerate(topology.regions)]
    document = router_config(topology, plans[1], all_routers=plans, replicas=REPLICAS,
                             backend_urls=_backend_urls(topology), listens=listens, state_dir=tmp_path / "s")
    config = RouterConfig.model_validate(document)
    assert config.region == "eu-west" and config.listen.port == 30001
    assert config.public_url == "http://127.0.0.1:30001"
    assert config.redis_url == f"redis://{listens['redis-eu-west']}/0"
    assert config.control_plane is not None
    assert config.control_plane.targets == tuple(listens[cp_grpc_proxy_name("eu-west", r)] for r in REPLICAS)
    assert {r: [str(u).rstrip("/") for u in urls] for r, urls in config.peers.items()} == {
        p.region: [p.url] for p in plans}
    table = bootstrap_table(config)
    urls = {d.name: d.url for d in table.models[0].deployments}
    assert urls["eu-moe"] == f"http://{listens['backend-eu-moe']}/v1"
    assert urls["us-dense"] == f"http://{listens['xregion-eu-west-us-dense']}/v1"


def test_simulator_argv(topology: Topology) -> None:
    backend = topology.regions["us-east"].backends[1]
    argv = simulator_argv(backend)
    assert argv[:1] == ["sim-backend"]
    assert argv[argv.index("--profile") + 1] == "linear-attention"
    assert argv[argv.index("--model") + 1] == "llama-3.3-70b"
    assert argv[argv.index("--port") + 1] == "0"


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, {}),
    ({"prefill_ms_per_1k": 7.5}, {"--prefill-ms-per-1k": "7.5"}),
    ({"prefill_ms_per_1k": 0, "kv_cache_tokens": 20000, "prefix_cache_blocks": 0},
     {"--prefill-ms-per-1k": "0.0", "--kv-cache-tokens": "20000", "--prefix-cache-blocks": "0"}),
])
def test_engine_sizes_reach_the_simulator_only_when_set(fields: dict[str, float], expected: dict[str, str]) -> None:
    argv = simulator_argv(BackendSpec(name="a", model="m", **fields))
    flags = ("--prefill-ms-per-1k", "--kv-cache-tokens", "--prefix-cache-blocks")
    assert {flag: argv[argv.index(flag) + 1] for flag in flags if flag in argv} == expected
    parser = argparse.ArgumentParser()
    register_sim_backend(parser.add_subparsers())
    parser.parse_args(argv)  # the simulator takes every flag the topology writes


def test_simulators_answer_with_the_workloads_natural_length() -> None:
    argv = simulator_argv(BackendSpec(name="a", model="m", seed=4))
    assert argv[argv.index("--output-tokens") + 1] == str(REALISTIC.answer_tokens_median)
    assert argv[argv.index("--output-tokens-sigma") + 1] == str(REALISTIC.answer_tokens_sigma)
    parser = argparse.ArgumentParser()
    register_sim_backend(parser.add_subparsers())
    args = parser.parse_args(argv)
    assert (args.output_tokens, args.output_tokens_sigma, args.seed) == (200, 0.8, 4)


def test_a_replica_of_a_three_member_cluster_lists_every_member_through_its_proxy(topology: Topology) -> None:
    members = ["127.0.0.1:2379", "127.0.0.1:2479", "127.0.0.1:2579"]
    specs = control_plane_proxies(members, REDIS)
    assert [(s.name, s.upstream, s.kind) for s in specs[:3]] == [
        ("etcd-1", members[0], "etcd"), ("etcd-2", members[1], "etcd"), ("etcd-3", members[2], "etcd")]
    listens = {spec.name: f"127.0.0.1:{21000 + i}" for i, spec in enumerate(specs)} | _listens(topology)
    document = control_plane_config(topology, "cp-1", backend_urls=_backend_urls(topology), listens=listens,
                                    etcd_members=3)
    config = parse_control_plane_config(document, "generated")
    assert config.etcd.endpoints == tuple(f"http://{listens[f'etcd-{i}']}" for i in (1, 2, 3))


def test_behind_sentinel_no_proxy_stands_in_front_of_redis(topology: Topology) -> None:
    sentinels = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/meridian/0"
    specs = [*control_plane_proxies(["127.0.0.1:2379"], None), *data_plane_proxies(topology, None,
                                                                                    _backend_urls(topology))]
    assert not [s for s in specs if s.kind in ("redis", "redis-cp")]
    listens = _listens(topology)
    replica = parse_control_plane_config(control_plane_config(
        topology, "cp-1", backend_urls=_backend_urls(topology), listens=listens, redis_url=sentinels), "generated")
    assert replica.redis_url == sentinels
    plan = RouterPlan("us-east", "us-east-1", 8080)
    router = router_config(topology, plan, all_routers=[plan], replicas=REPLICAS, backend_urls=_backend_urls(topology),
                           listens=listens, state_dir=Path("/tmp/state"), redis_url=sentinels)
    assert router["redis_url"] == sentinels
