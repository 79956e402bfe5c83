"""Properties every policy keeps on arbitrary candidates: only eligible deployments, each once (or the one
least bad that answers when none is); a trial first; the latency budget kept under every policy; scores in
[0, 1]; weighted converges to its weights; predictions grow with the answer's length."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from routing_fixtures import request, spec, view

from data_plane.deployments.breaker import BreakerState
from data_plane.policies import Candidate, PolicyState, TrialReason, decide
from data_plane.policies.filters import exclusion
from meridian_common import policy_names as names

latencies = st.one_of(st.just(0.0), st.floats(min_value=0.1, max_value=5000.0))
figures = st.one_of(st.none(), st.floats(min_value=0.0, max_value=3000.0))
money = st.floats(min_value=0.0, max_value=20.0)


@st.composite
def candidates(draw: st.DrawFn, min_size: int = 1) -> list[Candidate]:
    count = draw(st.integers(min_value=min_size, max_value=6))
    result = []
    for index in range(count):
        local = draw(st.booleans())
        max_concurrency = draw(st.sampled_from([0, 0, 1, 4, 16]))
        deployment = spec(
            f"d{index}", region="us-east" if local else "eu-west", cost_in=draw(money), cost_out=draw(money),
            quality=draw(st.floats(min_value=0.0, max_value=1.0)), max_concurrency=max_concurrency,
            weight=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
            added_latency_ms=0.0 if local else draw(st.floats(min_value=0.0, max_value=200.0)),
            ejected=draw(st.booleans()) and draw(st.booleans()), table_ttft_ms=draw(latencies),
            table_tpot_ms=draw(latencies) / 100,
        )
        stats = view(ttft=draw(figures), tpot=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=80.0))),
                     in_flight=draw(st.integers(min_value=0, max_value=20)),
                     waiting_first_token_ms=draw(latencies), error_rate=draw(st.floats(min_value=0.0, max_value=1.0)))
        trial = draw(st.sampled_from([None, None, None, TrialReason.STALE, TrialReason.HALF_OPEN]))
        result.append(Candidate(deployment, stats, draw(st.sampled_from(list(BreakerState))),
                                draw(st.booleans()) or draw(st.booleans()), local, trial=trial))
    return result


routes = st.builds(
    request,
    st.sampled_from(names.POLICIES),
    budget_ms=st.one_of(st.just(0.0), st.floats(min_value=1.0, max_value=3000.0)),
    priority=st.sampled_from(list(names.PRIORITY_PRESETS)),
    streaming=st.booleans(),
    input_tokens=st.integers(min_value=0, max_value=100_000),
    output_tokens=st.integers(min_value=1, max_value=8000),
    local_ratio=st.floats(min_value=0.0, max_value=1.0),
)


@settings(max_examples=300, deadline=None)
@given(candidates(), routes, st.integers(min_value=0, max_value=2**32))
def test_only_eligible_deployments_each_once(pool: list[Candidate], route: object, seed: int) -> None:
    decision = decide(pool, route, PolicyState(), random.Random(seed))  # type: ignore[arg-type]
    excluded = {c.deployment.name: exclusion(c) for c in pool}
    eligible = {name for name, reason in excluded.items() if reason is None}
    ordered = [d.name for d in decision.ordered]
    assert len(ordered) == len(set(ordered))
    if eligible:
        # The pick and the whole fallback order: nothing open, unhealthy, full or ejected, nothing left out.
        assert set(ordered) == eligible and not decision.panic
        due = [c.deployment.name for c in pool if c.trial is not None and c.deployment.name in eligible]
        if due:
            assert ordered[0] == due[0] or decision.trial is None and ordered[0] in due
    elif decision.panic:
        # Nothing eligible, nothing merely busy: one deployment that still answers, the least bad.
        (pick,) = ordered
        reason = excluded[pick]
        assert reason is not None and reason.kind.reachable
        assert not any(r is not None and r.kind.is_saturation for r in excluded.values())
    else:
        assert ordered == []
    assert [f.name for f in decision.figures] == [c.deployment.name for c in pool]
    assert {f.name for f in decision.figures if f.eligible} == eligible
    for figures in decision.figures:
        assert figures.score is None or 0.0 <= figures.score <= 1.0
    assert decision.reason and "\n" not in decision.reason


@settings(max_examples=300, deadline=None)
@given(candidates(), routes)
def test_no_policy_picks_over_budget_while_one_is_within(pool: list[Candidate], route: object) -> None:
    pool = [Candidate(c.deployment, c.stats, c.breaker_state, c.healthy, c.local, c.rate_limited) for c in pool]
    budget_ms = route.latency_budget_ms or 500.0  # type: ignore[attr-defined]
    route = request(route.policy, budget_ms=budget_ms, streaming=route.streaming,  # type: ignore[attr-defined]
                    input_tokens=route.estimated_input_tokens,  # type: ignore[attr-defined]
                    output_tokens=route.expected_output_tokens)  # type: ignore[attr-defined]
    decision = decide(pool, route, PolicyState(), random.Random(0))
    figures = {f.name: f for f in decision.figures}
    within = [f for f in decision.figures if f.eligible and f.latency_ms <= budget_ms]
    if within:
        pick = figures[decision.ordered[0].name]
        assert pick.latency_ms <= budget_ms
        if route.policy == names.COST_FIRST:
            assert pick.cost == min(f.cost for f in within)
    elif decision.ordered and not decision.panic:
        pick = figures[decision.ordered[0].name]
        assert pick.latency_ms == min(f.latency_ms for f in decision.figures if f.eligible)


@settings(max_examples=200, deadline=None)
@given(candidates(), st.integers(min_value=1, max_value=4000), st.integers(min_value=1, max_value=4000))
def test_a_longer_answer_never_predicts_faster(pool: list[Candidate], shorter: int, longer: int) -> None:
    shorter, longer = sorted((shorter, longer))
    short = decide(pool, request(names.LATENCY_FIRST, output_tokens=shorter), PolicyState(), random.Random(0))
    long = decide(pool, request(names.LATENCY_FIRST, output_tokens=longer), PolicyState(), random.Random(0))
    for a, b in zip(short.figures, long.figures, strict=True):
        assert a.ttft_ms == b.ttft_ms and b.predicted_ms >= a.predicted_ms


@settings(max_examples=300, deadline=None)
@given(candidates(), st.sampled_from(list(names.PRIORITY_PRESETS)), st.booleans())
def test_scores_are_within_zero_and_one(pool: list[Candidate], priority: str, streaming: bool) -> None:
    decision = decide(pool, request(names.SCORED, priority=priority, streaming=streaming), PolicyState(),
                      random.Random(0))
    scores = {f.name: f.score for f in decision.figures if f.eligible}
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores.values())
    ranked = [scores[d.name] for d in decision.ordered[1 if decision.trial else 0:] if d.name in scores]
    assert ranked == sorted(ranked, reverse=True)  # type: ignore[type-var]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.25, 1.0, 2.0, 5.0, 7.5]), min_size=1, max_size=5))
def test_weighted_converges_to_its_weights(weights: list[float]) -> None:
    pool = [Candidate(spec(f"d{i}", weight=w), view(), BreakerState.CLOSED, True, True)
            for i, w in enumerate(weights)]
    total = sum(weights) or float(len(weights))
    shares = [w / total for w in weights] if sum(weights) else [1 / len(weights)] * len(weights)
    state, rng, rounds = PolicyState(), random.Random(0), 2000
    firsts = Counter(decide(pool, request(names.WEIGHTED), state, rng).ordered[0].name for _ in range(rounds))
    for index, share in enumerate(shares):
        assert abs(firsts[f"d{index}"] / rounds - share) <= 0.01
