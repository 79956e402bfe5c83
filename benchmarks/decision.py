"""Micro-benchmark of one routing decision over a realistic three-deployment model, for
`meridian bench overhead`: per-decision wall time in nanoseconds, policies taken in turn."""

from __future__ import annotations

import random
import time

from data_plane.deployments.breaker import BreakerState
from data_plane.deployments.latency_model import LatencyModel, RequestSize
from data_plane.deployments.stats import DeploymentStats
from data_plane.policies.candidate import Candidate, PolicyState, RouteRequest
from data_plane.policies.scheduler import RANKERS, decide
from data_plane.table.snapshot import DeploymentSpec
from meridian_common.engine_figures import EngineFigures

_WARM_UP = 200


def _deployment(name: str, region: str, cost_in: float, cost_out: float, quality: float,
                added_latency_ms: float, weight: float) -> DeploymentSpec:
    return DeploymentSpec(
        name=name, url=f"http://{name}.internal:8000/v1", served_model="llama-3.3-70b", region=region,
        architecture="dense", cost_per_1m_input=cost_in, cost_per_1m_output=cost_out, quality=quality,
        max_concurrency=64, api_key_env="", weight=weight, added_latency_ms=added_latency_ms, ejected=False,
        rpm_limit=0, tpm_limit=0, error_rate=0.0,
    )


def benchmark_candidates(now: float = 100.0, seed: int = 7) -> list[Candidate]:
    """Two local deployments and a remote one, each with a window of recorded answers of realistic length
    (log-normal around 200 tokens) to prompts of realistic length (around 300 tokens), a size model fitted to
    them, and the engine's figures: every part of a decision is exercised."""
    rng = random.Random(seed)
    setups = [
        (_deployment("vllm-a", "us-east", 0.10, 0.20, 0.80, 0.0, 2.0), 5.3, 3),
        (_deployment("vllm-b", "us-east", 0.05, 0.10, 0.70, 0.0, 1.0), 5.8, 9),
        (_deployment("vllm-eu", "eu-west", 0.04, 0.08, 0.80, 85.0, 1.0), 5.1, 1),
    ]
    candidates = []
    for spec, log_mean_ms, in_flight in setups:
        stats = DeploymentStats(window_s=10.0)
        model = LatencyModel(spec.architecture, decay_s=2.0, stale_after_s=10.0)
        for i in range(600):
            at = now - 9.9 + i * 0.0165
            prompt_tokens = max(1, round(rng.lognormvariate(5.7, 1.3)))
            ttft_ms = rng.lognormvariate(log_mean_ms - 1.5, 0.4) + prompt_tokens / 100
            tpot_ms = rng.lognormvariate(1.6, 0.2)
            tokens = max(2, round(rng.lognormvariate(5.3, 0.8)))
            stats.begin(at)
            stats.end(at, started=at, latency_ms=ttft_ms + tpot_ms * (tokens - 1), ok=rng.random() > 0.01,
                      ttft_ms=ttft_ms, tpot_ms=tpot_ms, output_tokens=tokens)
            model.learn(RequestSize(prompt_tokens, tokens, in_flight, 0.0, prompt_tokens), at, ttft_ms=ttft_ms,
                        tpot_ms=tpot_ms)
        for _ in range(in_flight):
            stats.begin(now)
        local = spec.region == "us-east"
        engine = EngineFigures(requests_running=in_flight, requests_waiting=0.0, kv_cache_usage=0.3)
        candidates.append(Candidate(spec, stats.view(now), BreakerState.CLOSED, True, local, engine=engine,
                                    latency_model=model.view(now), cached_prompt_tokens=128 if local else 0))
    return candidates


def measure_decision_time(iterations: int, *, policy: str | None = None) -> list[float]:
    """Nanoseconds per `decide` call; every policy in turn unless `policy` names one."""
    candidates = benchmark_candidates()
    policies = [policy] if policy else list(RANKERS)
    requests = [
        RouteRequest(model="llama-3.3-70b", policy=name, latency_budget_ms=500.0, priority="balanced",
                     streaming=i % 2 == 1, estimated_input_tokens=900, expected_output_tokens=200, local_ratio=0.8)
        for i, name in enumerate(policies)
    ]
    state = PolicyState()
    rng = random.Random(11)
    clock = time.perf_counter_ns
    for i in range(_WARM_UP):
        decide(candidates, requests[i % len(requests)], state, rng)
    samples: list[float] = []
    for i in range(iterations):
        request = requests[i % len(requests)]
        started = clock()
        decide(candidates, request, state, rng)
        samples.append(float(clock() - started))
    return samples
