"""Builders of the plain values the data plane's decision tests need: specs, views, candidates, requests."""

from __future__ import annotations

import math

from data_plane.deployments.breaker import BreakerState
from data_plane.deployments.stats import StatsView
from data_plane.policies import Candidate, RouteRequest, TrialReason
from data_plane.table.snapshot import DeploymentSpec, ModelSpec
from meridian_common.catalog import BreakerConfig
from meridian_common.engine_figures import EngineFigures


def spec(name: str = "a", *, region: str = "us-east", cost_in: float = 0.1, cost_out: float = 0.2,
         quality: float = 0.8, max_concurrency: int = 0, weight: float = 1.0, added_latency_ms: float = 0.0,
         ejected: bool = False, table_ttft_ms: float = 0.0, table_tpot_ms: float = 0.0,
         context_window: int = 0) -> DeploymentSpec:
    return DeploymentSpec(
        name=name, url=f"http://{name}.test:8000/v1", served_model="m", region=region, architecture="dense",
        cost_per_1m_input=cost_in, cost_per_1m_output=cost_out, quality=quality,
        max_concurrency=max_concurrency,
        api_key_env="", weight=weight, added_latency_ms=added_latency_ms, ejected=ejected, rpm_limit=0,
        tpm_limit=0, error_rate=0.0, ttft_ms=table_ttft_ms, tpot_ms=table_tpot_ms, context_window=context_window,
    )


def model_spec(*deployments: DeploymentSpec, name: str = "m", fallbacks: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name=name, policy="latency-first", allowed_policies=(), latency_budget_ms=0, priority="balanced",
                     fallbacks=fallbacks, deployments=deployments, cache_enabled=False, cache_ttl_s=0,
                     breaker=BreakerConfig(), local_ratio=1.0)


def view(*, ttft: float | None = None, tpot: float | None = None, ttft_p95: float = 0.0, in_flight: int = 0,
         waiting_first_token_ms: float = 0.0, error_rate: float = 0.0, idle_s: float = math.inf) -> StatsView:
    answers = 100 if ttft is not None or tpot is not None else 0
    return StatsView(requests=answers, errors=round(answers * error_rate), error_rate=error_rate, answers=answers,
                     output_tokens=answers * 200, ttft_ms=ttft, tpot_ms=tpot,
                     ttft_p95_ms=ttft_p95 or (ttft or 0.0) * 1.5, tpot_p95_ms=(tpot or 0.0) * 1.5,
                     latency_p50_ms=0.0, latency_p95_ms=0.0, in_flight=in_flight,
                     waiting_first_token_ms=waiting_first_token_ms, idle_s=idle_s)


def candidate(name: str = "a", *, ttft: float | None = None, tpot: float | None = None, in_flight: int = 0,
              waiting_first_token_ms: float = 0.0, error_rate: float = 0.0,
              breaker: BreakerState = BreakerState.CLOSED, healthy: bool = True, local: bool = True,
              rate_limited: str | None = None, backend_saturated: str | None = None,
              trial: TrialReason | None = None, engine: EngineFigures | None = None,
              **spec_fields: object) -> Candidate:
    if "region" not in spec_fields:
        spec_fields["region"] = "us-east" if local else "eu-west"
    return Candidate(
        deployment=spec(name, **spec_fields),  # type: ignore[arg-type]
        stats=view(ttft=ttft, tpot=tpot, in_flight=in_flight, waiting_first_token_ms=waiting_first_token_ms,
                   error_rate=error_rate),
        breaker_state=breaker,
        healthy=healthy,
        local=local,
        rate_limited=rate_limited,
        backend_saturated=backend_saturated,
        trial=trial,
        engine=engine,
    )


def request(policy: str, *, budget_ms: float = 0.0, priority: str = "balanced", streaming: bool = False,
            input_tokens: int = 1000, output_tokens: int = 200, local_ratio: float = 1.0,
            score_weights: tuple[float, float, float, float] | None = None, locality_margin: float = 0.0,
            max_requests_waiting: int = 0, max_kv_cache_usage: float = 0.0, requested_output_tokens: int = 0
            ) -> RouteRequest:
    return RouteRequest(model="m", policy=policy, latency_budget_ms=budget_ms, priority=priority,
                        streaming=streaming, estimated_input_tokens=input_tokens,
                        expected_output_tokens=output_tokens, local_ratio=local_ratio, score_weights=score_weights,
                        locality_margin=locality_margin, max_requests_waiting=max_requests_waiting,
                        max_kv_cache_usage=max_kv_cache_usage, requested_output_tokens=requested_output_tokens)
