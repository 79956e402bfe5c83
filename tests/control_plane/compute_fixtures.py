"""A three-region catalog and telemetry builders shared by the control-plane computation tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from control_plane.config import ControlPlaneConfig, parse_control_plane_config
from control_plane.tables.compute import ComputeState, compute_tables
from control_plane.telemetry.merge import MergedStats, StatsKey
from meridian_common.histogram import Histogram
from meridian_proto import policy_pb2, routing_pb2, telemetry_pb2

LLAMA = "llama-3.3-70b"
SMALL = "qwen-small"


def _deployment(name: str, port: int, region: str, **extra: object) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/v1"
    return {"name": name, "url": url, "served_model": "m", "region": region, **extra}


CATALOG: dict[str, object] = {
    "regions": {
        "eu-west": {"rtt_ms": {"us-east": 80, "ap-south": 120}},
        "us-east": {"rtt_ms": {"ap-south": 200}},
        "ap-south": {},
    },
    "models": {
        LLAMA: {
            "policy": "weighted",
            "deployments": [
                _deployment("vllm-a", 9100, "eu-west"),
                _deployment("vllm-b", 9101, "eu-west", cost_per_1m_input=0.2),
                _deployment("vllm-c", 9102, "us-east"),
            ],
        },
        SMALL: {
            "policy": "latency-first",
            "allowed_policies": ["latency-first", "cost-first", "weighted"],
            "deployments": [
                _deployment("ollama-a", 9200, "ap-south"),
                _deployment("ollama-b", 9201, "us-east"),
            ],
        },
    },
}


def catalog(**overrides: object) -> ControlPlaneConfig:
    return parse_control_plane_config({**CATALOG, **overrides}, "test-catalog")


TPOT_MS = 20.0
"""Time per output token of the builders below unless told otherwise."""


def stats(model: str, deployment: str, ttft_ms: float, requests: int = 100, errors: int = 0,
          region: str = "eu-west", *, tpot_ms: float = TPOT_MS, answer_tokens: int = 0) -> MergedStats:
    """`requests` answers, `errors` of them failed; every successful one measured `ttft_ms` and `tpot_ms` and
    wrote `answer_tokens` tokens (0: the routers counted none)."""
    answers = requests - errors
    return MergedStats(model=model, deployment=deployment, deployment_region=region, requests=requests,
                       errors=errors, ttft=Histogram.of([ttft_ms] * answers),
                       tpot=Histogram.of([tpot_ms] * answers), output_tokens=answer_tokens * answers,
                       routers=frozenset({"r1"}))


def llama_stats(ttfts_ms: Mapping[str, float], errors: Mapping[str, int] | None = None,
                requests: int = 100, tpots_ms: Mapping[str, float] | None = None,
                ) -> dict[StatsKey, MergedStats]:
    return {(LLAMA, name): stats(LLAMA, name, ttft, requests, (errors or {}).get(name, 0),
                                 tpot_ms=(tpots_ms or {}).get(name, TPOT_MS))
            for name, ttft in ttfts_ms.items()}


def sample(router: str, model: str, deployment: str, ttfts_ms: Sequence[float], errors: int = 0,
           end_ms: int = 10_000, in_flight: int = 0, region: str = "eu-west", *,
           tpots_ms: Sequence[float] = (), output_tokens: int = 0) -> telemetry_pb2.TelemetrySample:
    """One router's sample: an answer per TTFT in `ttfts_ms`, plus `errors` failed attempts."""
    return telemetry_pb2.TelemetrySample(
        router_id=router, region=region, model=model, deployment=deployment, deployment_region="eu-west",
        window_start_unix_ms=end_ms - 1000, window_end_unix_ms=end_ms, requests=len(ttfts_ms) + errors,
        errors=errors, ttft=Histogram.of(ttfts_ms).to_proto(), tpot=Histogram.of(tpots_ms).to_proto(),
        output_tokens=output_tokens, in_flight=in_flight,
    )


def run_ticks(config: ControlPlaneConfig, stats_per_tick: Sequence[Mapping[StatsKey, MergedStats]],
              policy: policy_pb2.PolicyDocument | None = None, state: ComputeState | None = None,
              start_s: float = 1000.0, tick_s: float = 1.0,
              ) -> tuple[list[dict[str, routing_pb2.RoutingTable]], ComputeState]:
    document = policy or policy_pb2.PolicyDocument()
    current = state or ComputeState()
    history = []
    for index, tick_stats in enumerate(stats_per_tick):
        tables, current = compute_tables(config, document, tick_stats, current, start_s + index * tick_s)
        history.append(tables)
    return history, current


def route(tables: Mapping[str, routing_pb2.RoutingTable], region: str, model: str) -> routing_pb2.ModelRoute:
    return next(m for m in tables[region].models if m.model == model)


def weights(tables: Mapping[str, routing_pb2.RoutingTable], region: str = "eu-west",
            model: str = LLAMA) -> dict[str, float]:
    return {d.name: d.weight for d in route(tables, region, model).deployments}
