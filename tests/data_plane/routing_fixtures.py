"""Builders of the plain values the data plane's decision tests need: specs, views, candidates, requests."""

from __future__ import annotations

from data_plane.breaker import BreakerState
from data_plane.policies import Candidate, RouteRequest
from data_plane.stats import StatsView
from data_plane.table import DeploymentSpec


def spec(name: str = "a", *, region: str = "us-east", cost_in: float = 0.1, cost_out: float = 0.2,
         quality: float = 0.8, max_concurrency: int = 0, weight: float = 1.0, added_latency_ms: float = 0.0,
         ejected: bool = False, p95_ms: float = 0.0) -> DeploymentSpec:
    return DeploymentSpec(
        name=name, url=f"http://{name}.test:8000/v1", served_model="m", region=region, architecture="dense",
        cost_per_1m_input=cost_in, cost_per_1m_output=cost_out, quality=quality,
        max_concurrency=max_concurrency,
        api_key_env="", weight=weight, added_latency_ms=added_latency_ms, ejected=ejected, rpm_limit=0,
        tpm_limit=0, p95_ms=p95_ms, error_rate=0.0,
    )


def view(*, p95_ms: float = 0.0, ttft_p95_ms: float = 0.0, in_flight: int = 0,
         oldest_in_flight_ms: float = 0.0) -> StatsView:
    requests = 100 if p95_ms > 0 else 0
    return StatsView(requests=requests, errors=0, error_rate=0.0, p50_ms=p95_ms / 2, p95_ms=p95_ms,
                     p99_ms=p95_ms * 1.2, ttft_p95_ms=ttft_p95_ms, tokens_per_s=0.0, in_flight=in_flight,
                     oldest_in_flight_ms=oldest_in_flight_ms)


def candidate(name: str = "a", *, p95: float = 0.0, ttft_p95: float = 0.0, in_flight: int = 0,
              oldest_in_flight_ms: float = 0.0, breaker: BreakerState = BreakerState.CLOSED, healthy: bool = True,
              local: bool = True,
              **spec_fields: object) -> Candidate:
    if "region" not in spec_fields:
        spec_fields["region"] = "us-east" if local else "eu-west"
    return Candidate(
        deployment=spec(name, **spec_fields),  # type: ignore[arg-type]
        stats=view(p95_ms=p95, ttft_p95_ms=ttft_p95, in_flight=in_flight, oldest_in_flight_ms=oldest_in_flight_ms),
        breaker_state=breaker,
        healthy=healthy,
        local=local,
    )


def request(policy: str, *, budget_ms: float = 0.0, priority: str = "balanced", streaming: bool = False,
            input_tokens: int = 1000, output_tokens: int = 200, local_ratio: float = 1.0) -> RouteRequest:
    return RouteRequest(model="m", policy=policy, latency_budget_ms=budget_ms, priority=priority,
                        streaming=streaming, estimated_input_tokens=input_tokens,
                        max_output_tokens=output_tokens, local_ratio=local_ratio)
