"""Each filter and each policy, table-driven over plain candidates: who is picked, in what fallback order,
and the reason given."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from routing_fixtures import candidate, request

from data_plane.breaker import BreakerState
from data_plane.policies import Candidate, PolicyState, UnknownPolicy, decide
from data_plane.policies.benchmark import benchmark_candidates, measure_decision_time
from data_plane.policies.filters import excluded_because
from meridian_common import policy_names as names


def _order(candidates: list[Candidate], policy: str, state: PolicyState | None = None, seed: int = 0,
           **request_fields: object) -> tuple[list[str], str]:
    decision = decide(candidates, request(policy, **request_fields), state or PolicyState(),  # type: ignore[arg-type]
                      random.Random(seed))
    return [d.name for d in decision.ordered], decision.reason


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (candidate(), None),
        (candidate(ejected=True), "ejected by the control plane"),
        (candidate(healthy=False), "failing health checks"),
        (candidate(breaker=BreakerState.OPEN), "circuit breaker open"),
        (candidate(breaker=BreakerState.HALF_OPEN), None),
        (candidate(in_flight=8, max_concurrency=8), "at capacity 8/8"),
        (candidate(in_flight=7, max_concurrency=8), None),
        (candidate(in_flight=500, max_concurrency=0), None),  # 0 = unlimited
        (candidate(ejected=True, healthy=False), "ejected by the control plane"),
    ],
)
def test_filters(entry: Candidate, reason: str | None) -> None:
    assert excluded_because(entry) == reason


def test_nothing_eligible_gives_an_empty_order_and_says_why() -> None:
    candidates = [candidate("a", ejected=True), candidate("b", breaker=BreakerState.OPEN)]
    for policy in names.POLICIES:
        order, reason = _order(candidates, policy)
        assert order == []
        assert reason == "no eligible deployment of 2: a ejected by the control plane; b circuit breaker open"


def test_unknown_policy_and_priority_raise() -> None:
    with pytest.raises(UnknownPolicy, match="unknown policy 'fastest'"):
        _order([candidate()], "fastest")
    with pytest.raises(UnknownPolicy, match="unknown priority 'vibes'"):
        _order([candidate()], names.SCORED, priority="vibes")


def test_figures_cover_every_candidate_in_table_order() -> None:
    candidates = [candidate("a", p95=100, cost_in=1.0, cost_out=2.0, quality=0.9, in_flight=3),
                  candidate("b", p95_ms=50.0, added_latency_ms=20, local=False, breaker=BreakerState.OPEN)]
    decision = decide(candidates, request(names.SCORED, input_tokens=1000, output_tokens=500), PolicyState(),
                      random.Random(0))
    a, b = decision.figures
    assert (a.name, a.region, a.eligible, a.excluded_because, a.in_flight, a.breaker) == (
        "a", "us-east", True, None, 3, "closed")
    assert a.latency_ms == 100 and a.quality == 0.9
    assert a.cost == pytest.approx((1.0 * 1000 + 2.0 * 500) / 1e6)
    assert a.score is not None and 0.0 <= a.score <= 1.0
    assert (b.eligible, b.excluded_because, b.latency_ms, b.score, b.breaker) == (
        False, "circuit breaker open", 70, None, "open")


LATENCY_FIRST_CASES = [
    ("lowest p95", [candidate("a", p95=300), candidate("b", p95=100), candidate("c", p95=200)], {},
     ["b", "c", "a"], "lowest p95 100.0ms of 3"),
    ("streams compare ttft", [candidate("a", p95=300, ttft_p95=20), candidate("b", p95=100, ttft_p95=80)],
     {"streaming": True}, ["a", "b"], "lowest ttft p95 20.0ms of 2"),
    ("added latency counts on the table's p95",
     [candidate("near", p95=150), candidate("far", p95_ms=100.0, added_latency_ms=80, local=False)], {},
     ["near", "far"], "lowest p95 150.0ms of 2"),
    ("own samples already hold the RTT",
     [candidate("near", p95=150), candidate("far", p95=100, added_latency_ms=80, local=False)], {},
     ["far", "near"], "lowest p95 100.0ms of 2"),
    ("unobserved remote counts its RTT", [candidate("near", p95=150), candidate("far", added_latency_ms=80,
                                                                                local=False)], {},
     ["far", "near"], "unobserved, exploring (of 2)"),
    ("table p95 until observed", [candidate("a", p95=150), candidate("b", p95_ms=120.0)], {},
     ["b", "a"], "lowest p95 120.0ms of 2"),
    ("unobserved is explored", [candidate("a", p95=150), candidate("new")], {},
     ["new", "a"], "unobserved, exploring (of 2)"),
    ("tie goes to fewer in flight",
     [candidate("a", p95=100, in_flight=4), candidate("b", p95=100, in_flight=1)],
     {}, ["b", "a"], "lowest p95 100.0ms of 2"),
    ("skips the ineligible", [candidate("a", p95=10, healthy=False), candidate("b", p95=100)], {},
     ["b"], "lowest p95 100.0ms of 1"),
]


@pytest.mark.parametrize(("candidates", "fields", "order", "reason"), [c[1:] for c in LATENCY_FIRST_CASES],
                         ids=[c[0] for c in LATENCY_FIRST_CASES])
def test_latency_first(candidates: list[Candidate], fields: dict[str, object], order: list[str],
                       reason: str) -> None:
    assert _order(candidates, names.LATENCY_FIRST, **fields) == (order, reason)


def _priced(name: str, p95: float, cost_out: float) -> Candidate:
    return candidate(name, p95=p95, cost_in=0.0, cost_out=cost_out)


COST_FIRST_CASES = [
    ("cheapest under budget",
     [_priced("fast", 100, 3.0), _priced("mid", 400, 2.0), _priced("slow", 900, 1.0)],
     {"budget_ms": 500}, ["mid", "fast", "slow"], "cheapest under budget 500ms: $0.0004/req p95=400ms"),
    ("none under budget: fastest", [_priced("a", 900, 1.0), _priced("b", 700, 2.0)], {"budget_ms": 500},
     ["b", "a"], "none under budget 500ms; fastest p95=700ms"),
    ("no budget: cheapest", [_priced("a", 100, 3.0), _priced("b", 5000, 1.0)], {"budget_ms": 0},
     ["b", "a"], "cheapest (no budget): $0.0002/req p95=5000ms"),
    ("equal cost: faster first", [_priced("a", 300, 1.0), _priced("b", 200, 1.0)], {"budget_ms": 500},
     ["b", "a"], "cheapest under budget 500ms: $0.0002/req p95=200ms"),
    ("input tokens are priced", [candidate("a", p95=10, cost_in=5.0, cost_out=0.0),
                                 candidate("b", p95=10, cost_in=0.0, cost_out=5.0)],
     {"input_tokens": 10, "output_tokens": 1000}, ["a", "b"], "cheapest (no budget): $0.00005/req p95=10ms"),
    ("streams budget ttft", [candidate("a", p95=900, ttft_p95=90, cost_out=1.0),
                             candidate("b", p95=90, ttft_p95=80, cost_out=2.0)],
     {"budget_ms": 100, "streaming": True}, ["a", "b"],
     "cheapest under budget 100ms: $0.0003/req ttft p95=90ms"),
]


@pytest.mark.parametrize(("candidates", "fields", "order", "reason"), [c[1:] for c in COST_FIRST_CASES],
                         ids=[c[0] for c in COST_FIRST_CASES])
def test_cost_first(candidates: list[Candidate], fields: dict[str, object], order: list[str],
                    reason: str) -> None:
    assert _order(candidates, names.COST_FIRST, **fields) == (order, reason)


def test_weighted_is_nginx_smooth_weighted_round_robin() -> None:
    candidates = [candidate("a", weight=5), candidate("b", weight=1), candidate("c", weight=1)]
    state = PolicyState()
    picks = [_order(candidates, names.WEIGHTED, state)[0][0] for _ in range(14)]
    assert "".join(picks) == "aabacaa" * 2  # nginx's documented sequence for 5:1:1


@pytest.mark.parametrize(
    ("weights", "eligible", "expected"),
    [
        ({"a": 3, "b": 1}, {"a", "b"}, {"a": 75, "b": 25}),
        ({"a": 3, "b": 1, "z": 0}, {"a", "b", "z"}, {"a": 75, "b": 25}),  # weight 0 never leads
        ({"a": 0, "b": 0}, {"a", "b"}, {"a": 50, "b": 50}),  # all zero: even split
        ({"a": 3, "b": 1}, {"b"}, {"b": 100}),
    ],
)
def test_weighted_shares(weights: dict[str, float], eligible: set[str], expected: dict[str, int]) -> None:
    candidates = [candidate(n, weight=w, healthy=n in eligible) for n, w in weights.items()]
    state = PolicyState()
    firsts = Counter(_order(candidates, names.WEIGHTED, state)[0][0] for _ in range(100))
    assert dict(firsts) == expected


def test_weighted_order_and_reason() -> None:
    candidates = [candidate("a", weight=1, p95=50), candidate("b", weight=2), candidate("z", weight=0)]
    assert _order(candidates, names.WEIGHTED) == (["b", "a", "z"], "smooth weighted: weight 2 of 3 (67%)")


def _scored_pool() -> list[Candidate]:
    return [
        candidate("fast", p95=100, cost_in=0.0, cost_out=4.0, quality=0.6),
        candidate("cheap", p95=900, cost_in=0.0, cost_out=1.0, quality=0.6),
        candidate("smart", p95=500, cost_in=0.0, cost_out=4.0, quality=1.0),
    ]


@pytest.mark.parametrize(
    ("priority", "order", "best_score"),
    [
        # speed (0.7, 0.1, 0.2): fast 0.7+0+0.12, smart 0.35+0+0.2, cheap 0+0.1+0.12
        ("speed", ["fast", "smart", "cheap"], 0.82),
        ("cost", ["cheap", "smart", "fast"], 0.82),  # cost (0.1, 0.7, 0.2): cheap 0+0.7+0.12, smart 0.25
        ("quality", ["smart", "fast", "cheap"], 0.85),  # quality (0.1, 0.1, 0.8): smart 0.05+0+0.8
        ("balanced", ["fast", "cheap", "smart"], 0.538),  # fast 0.34+0+0.198
    ],
)
def test_scored_presets(priority: str, order: list[str], best_score: float) -> None:
    decision = decide(_scored_pool(), request(names.SCORED, priority=priority), PolicyState(),
                      random.Random(0))
    assert [d.name for d in decision.ordered] == order
    assert decision.reason == f"best score {best_score:.3f} ({priority}) of 3"
    scores = {f.name: f.score for f in decision.figures}
    assert scores[order[0]] == pytest.approx(best_score)
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores.values())


def test_scored_single_candidate_gets_full_latency_and_cost_terms() -> None:
    decision = decide([candidate("a", quality=0.5)], request(names.SCORED, priority="speed"), PolicyState(),
                      random.Random(0))
    assert decision.figures[0].score == pytest.approx(0.7 + 0.1 + 0.2 * 0.5)


LEAST_CONNECTIONS_CASES = [
    ("fewest relative to capacity", [candidate("a", in_flight=4, max_concurrency=8),
                                     candidate("b", in_flight=3, max_concurrency=4)], ["a", "b"],
     "least loaded 4/8 in flight of 2"),
    ("idle: larger capacity first", [candidate("a", max_concurrency=4), candidate("b", max_concurrency=16)],
     ["b", "a"], "least loaded 0/16 in flight of 2"),
    ("unlimited counts as the largest limit", [candidate("a", in_flight=2, max_concurrency=10),
                                               candidate("u", in_flight=5)], ["a", "u"],
     "least loaded 2/10 in flight of 2"),
    ("all unlimited: raw counts", [candidate("a", in_flight=2), candidate("b", in_flight=1)], ["b", "a"],
     "least loaded 1/unlimited in flight of 2"),
]


@pytest.mark.parametrize(("candidates", "order", "reason"), [c[1:] for c in LEAST_CONNECTIONS_CASES],
                         ids=[c[0] for c in LEAST_CONNECTIONS_CASES])
def test_least_connections(candidates: list[Candidate], order: list[str], reason: str) -> None:
    assert _order(candidates, names.LEAST_CONNECTIONS) == (order, reason)


def test_round_robin_takes_turns_and_skips_the_ineligible() -> None:
    state = PolicyState()
    pool = [candidate("a"), candidate("b"), candidate("c")]
    assert [_order(pool, names.ROUND_ROBIN, state)[0] for _ in range(3)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    pool[1] = candidate("b", healthy=False)
    assert [_order(pool, names.ROUND_ROBIN, state)[0][0] for _ in range(4)] == ["a", "c", "a", "c"]
    assert _order(pool, names.ROUND_ROBIN, state)[1] == "round-robin: next in turn of 2"


FIXED_RATIO_CASES = [
    ("all local", 1.0,
     [candidate("r", p95=10, local=False), candidate("l2", p95=90), candidate("l1", p95=50)],
     ["l1", "l2", "r"], "local share 100%: drew local, lowest p95 50.0ms"),
    ("all remote", 0.0, [candidate("l", p95=10), candidate("r", p95=90, local=False)], ["r", "l"],
     "local share 0%: drew remote, lowest p95 90.0ms"),
    ("local full: spills over", 1.0, [candidate("l", in_flight=1, max_concurrency=1),
                                      candidate("r", p95=90, local=False)],
     ["r"], "local share 100%: drew local, none eligible; spilled to eu-west p95 90.0ms"),
]


@pytest.mark.parametrize(("ratio", "candidates", "order", "reason"), [c[1:] for c in FIXED_RATIO_CASES],
                         ids=[c[0] for c in FIXED_RATIO_CASES])
def test_fixed_ratio(ratio: float, candidates: list[Candidate], order: list[str], reason: str) -> None:
    assert _order(candidates, names.FIXED_RATIO, local_ratio=ratio) == (order, reason)


def test_fixed_ratio_share_follows_local_ratio() -> None:
    pool = [candidate("l"), candidate("r", local=False)]
    rng, state = random.Random(42), PolicyState()
    firsts = Counter(decide(pool, request(names.FIXED_RATIO, local_ratio=0.8), state, rng).ordered[0].name
                     for _ in range(4000))
    assert firsts["l"] / 4000 == pytest.approx(0.8, abs=0.03)


def test_benchmark_runs_every_policy() -> None:
    samples = measure_decision_time(70)
    assert len(samples) == 70 and all(s > 0 for s in samples)
    assert len(benchmark_candidates()) == 3


def test_latency_first_leaves_a_backend_whose_requests_are_stuck() -> None:
    stuck = candidate("stuck", p95=10.0, in_flight=3, oldest_in_flight_ms=600.0)
    steady = candidate("steady", p95=40.0, in_flight=1, oldest_in_flight_ms=20.0)
    decision = decide([stuck, steady], request("latency-first"), PolicyState(), random.Random(1))
    assert [d.name for d in decision.ordered] == ["steady", "stuck"]
    streamed = decide([stuck, steady], request("latency-first", streaming=True), PolicyState(), random.Random(1))
    assert streamed.ordered[0].name in {"stuck", "steady"}  # a stream's age is generation, not TTFT
