"""Each filter and each policy, table-driven over plain candidates: who is picked, in what fallback order,
and the reason given."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from routing_fixtures import candidate, request

from benchmarks.decision import benchmark_candidates, measure_decision_time
from data_plane.deployments.breaker import BreakerState
from data_plane.deployments.latency_model import LatencyModel, RequestSize
from data_plane.policies import Candidate, PolicyState, TrialReason, UnknownPolicy, decide
from data_plane.policies.exclusion import ExclusionKind
from data_plane.policies.filters import context_exclusion, exclusion
from meridian_common import policy_names as names
from meridian_common.engine_figures import EngineFigures


def _order(candidates: list[Candidate], policy: str, state: PolicyState | None = None, seed: int = 0,
           **request_fields: object) -> tuple[list[str], str]:
    decision = decide(candidates, request(policy, **request_fields), state or PolicyState(),  # type: ignore[arg-type]
                      random.Random(seed))
    return [d.name for d in decision.ordered], decision.reason


@pytest.mark.parametrize(
    ("entry", "reason", "kind"),
    [
        (candidate(), None, None),
        (candidate(ejected=True), "ejected by the control plane", ExclusionKind.EJECTED),
        (candidate(healthy=False), "failing health checks", ExclusionKind.UNHEALTHY),
        (candidate(breaker=BreakerState.OPEN), "circuit breaker open", ExclusionKind.BREAKER_OPEN),
        (candidate(breaker=BreakerState.HALF_OPEN), None, None),
        (candidate(in_flight=8, max_concurrency=8), "at capacity 8/8", ExclusionKind.AT_CAPACITY),
        (candidate(in_flight=7, max_concurrency=8), None, None),
        (candidate(in_flight=500, max_concurrency=0), None, None),  # 0 = unlimited
        (candidate(rate_limited="rate limited: rpm 3 reached"), "rate limited: rpm 3 reached",
         ExclusionKind.RATE_LIMITED),
        (candidate(backend_saturated="backend saturated: answered 429, no request for 1.5s"),
         "backend saturated: answered 429, no request for 1.5s", ExclusionKind.BACKEND_SATURATED),
        (candidate(backend_saturated="backend saturated", in_flight=8, max_concurrency=8), "backend saturated",
         ExclusionKind.BACKEND_SATURATED),
        (candidate(backend_saturated="backend saturated", healthy=False), "failing health checks",
         ExclusionKind.UNHEALTHY),
        (candidate(ejected=True, healthy=False), "ejected by the control plane", ExclusionKind.EJECTED),
    ],
)
def test_filters(entry: Candidate, reason: str | None, kind: ExclusionKind | None) -> None:
    found = exclusion(entry)
    assert (None if found is None else str(found)) == reason
    assert (None if found is None else found.kind) is kind


def test_exclusion_kinds_say_what_to_do() -> None:
    assert {k for k in ExclusionKind if k.is_saturation} == {ExclusionKind.BACKEND_SATURATED,
                                                             ExclusionKind.AT_CAPACITY, ExclusionKind.RATE_LIMITED}
    assert {k for k in ExclusionKind if k.reachable} == {ExclusionKind.EJECTED, ExclusionKind.BREAKER_OPEN}


@pytest.mark.parametrize(("window", "input_tokens", "requested", "excluded"), [
    (0, 10**6, 10**6, False),  # no window declared: anything goes
    (8192, 8000, 0, False),  # no max_tokens: the prompt alone must fit
    (8192, 8000, 192, False),
    (8192, 8000, 193, True),
    (8192, 9000, 0, True),
])
def test_context_window_filter(window: int, input_tokens: int, requested: int, excluded: bool) -> None:
    found = context_exclusion(window, request(names.LATENCY_FIRST, input_tokens=input_tokens,
                                              requested_output_tokens=requested).context_tokens)
    assert (found is not None) is excluded
    if found is not None:
        assert found.kind is ExclusionKind.CONTEXT_TOO_LONG
        assert str(found) == f"context window {window} < about {input_tokens + requested} tokens requested"


def test_a_typical_answer_length_never_excludes_only_max_tokens_does() -> None:
    small, large = candidate("small", ttft=10, context_window=4096), candidate("large", ttft=50, context_window=32768)
    assert _order([small, large], names.LATENCY_FIRST, input_tokens=4000, output_tokens=2000)[0] == ["small", "large"]
    order, _ = _order([small, large], names.LATENCY_FIRST, input_tokens=4000, output_tokens=2000,
                      requested_output_tokens=2000)
    assert order == ["large"]


def test_a_request_too_long_for_every_window_gets_no_deployment_and_no_panic() -> None:
    entries = [candidate("a", context_window=4096), candidate("b", context_window=8192, breaker=BreakerState.OPEN)]
    decision = decide(entries, request(names.LATENCY_FIRST, input_tokens=9000), PolicyState(), random.Random(0))
    assert decision.ordered == () and not decision.panic and not decision.saturated
    assert "context window 8192 < about 9000 tokens requested" in decision.reason


def test_nothing_that_answers_gives_an_empty_order_and_says_why() -> None:
    candidates = [candidate("a", healthy=False), candidate("b", healthy=False, breaker=BreakerState.OPEN)]
    for policy in names.POLICIES:
        decision = decide(candidates, request(policy), PolicyState(), random.Random(0))
        assert decision.ordered == () and not decision.panic
        assert decision.reason == "no eligible deployment of 2: a failing health checks; b failing health checks"


def test_every_deployment_excluded_the_least_bad_that_answers_serves() -> None:
    candidates = [candidate("a", breaker=BreakerState.OPEN, ttft=50, tpot=5, error_rate=0.6),
                  candidate("b", breaker=BreakerState.OPEN, ttft=90, tpot=9, error_rate=0.1),
                  candidate("c", ejected=True, ttft=10, tpot=1, error_rate=0.3),
                  candidate("down", healthy=False)]
    for policy in names.POLICIES:
        decision = decide(candidates, request(policy), PolicyState(), random.Random(0))
        assert [d.name for d in decision.ordered] == ["b"] and decision.panic
        assert decision.reason.startswith("panic: every deployment is excluded (a circuit breaker open; ")
        assert decision.reason.endswith("least bad that answers: b")


def test_no_panic_while_a_deployment_is_only_busy() -> None:
    candidates = [candidate("a", breaker=BreakerState.OPEN), candidate("b", in_flight=4, max_concurrency=4)]
    decision = decide(candidates, request(names.LATENCY_FIRST), PolicyState(), random.Random(0))
    assert decision.ordered == () and not decision.panic and decision.saturated


def test_a_backend_that_answered_429_is_passed_over_and_waited_for_not_panicked_over() -> None:
    saturated = "backend saturated: answered 429, no request for 2.0s"
    candidates = [candidate("a", ttft=10, tpot=1, backend_saturated=saturated), candidate("b", ttft=100, tpot=5)]
    decision = decide(candidates, request(names.LATENCY_FIRST), PolicyState(), random.Random(0))
    assert [d.name for d in decision.ordered] == ["b"]
    (a, _) = decision.figures
    assert str(a.exclusion) == saturated
    alone = decide(candidates[:1] + [candidate("b", breaker=BreakerState.OPEN)], request(names.LATENCY_FIRST),
                   PolicyState(), random.Random(0))
    assert alone.ordered == () and not alone.panic and alone.saturated
    assert alone.reason == f"no eligible deployment of 2: a {saturated}; b circuit breaker open"


def test_unknown_policy_and_priority_raise() -> None:
    with pytest.raises(UnknownPolicy, match="unknown policy 'fastest'"):
        _order([candidate()], "fastest")
    with pytest.raises(UnknownPolicy, match="unknown priority 'vibes'"):
        _order([candidate()], names.SCORED, priority="vibes")


def test_figures_cover_every_candidate_in_table_order() -> None:
    candidates = [candidate("a", ttft=100, tpot=5, cost_in=1.0, cost_out=2.0, quality=0.9, in_flight=3),
                  candidate("b", table_ttft_ms=50.0, table_tpot_ms=4.0, added_latency_ms=20, local=False,
                            breaker=BreakerState.OPEN)]
    decision = decide(candidates, request(names.SCORED, input_tokens=1000, output_tokens=500), PolicyState(),
                      random.Random(0))
    a, b = decision.figures
    assert (a.name, a.region, a.eligible, a.exclusion, a.in_flight, a.breaker) == (
        "a", "us-east", True, None, 3, "closed")
    assert (a.ttft_ms, a.tpot_ms, a.predicted_ms, a.latency_ms, a.estimate) == (100, 5, 2600, 2600, "measured")
    assert a.quality == 0.9 and a.cost == pytest.approx((1.0 * 1000 + 2.0 * 500) / 1e6)
    assert a.score is not None and 0.0 <= a.score <= 1.0
    assert (b.eligible, str(b.exclusion), b.ttft_ms, b.predicted_ms, b.estimate, b.score, b.breaker) == (
        False, "circuit breaker open", 70, 2070, "control plane", None, "open")


LATENCY_FIRST_CASES = [
    ("lowest predicted latency",
     [candidate("a", ttft=100, tpot=10), candidate("b", ttft=300, tpot=4), candidate("c", ttft=50, tpot=8)], {},
     ["b", "c", "a"], "lowest predicted latency 1100ms of 3"),
    ("the answer's length decides",
     [candidate("a", ttft=100, tpot=10), candidate("b", ttft=300, tpot=4), candidate("c", ttft=50, tpot=8)],
     {"output_tokens": 10}, ["c", "a", "b"], "lowest predicted latency 130ms of 3"),
    ("streams compare ttft", [candidate("a", ttft=20, tpot=10), candidate("b", ttft=80, tpot=2)],
     {"streaming": True}, ["a", "b"], "lowest predicted ttft 20ms of 2"),
    ("the table's figures count the RTT",
     [candidate("near", ttft=100, tpot=5),
      candidate("far", table_ttft_ms=50.0, table_tpot_ms=5.0, added_latency_ms=80, local=False)], {},
     ["near", "far"], "lowest predicted latency 1100ms of 2"),
    ("own samples already hold the RTT",
     [candidate("near", ttft=100, tpot=5), candidate("far", ttft=130, tpot=4, added_latency_ms=80, local=False)],
     {}, ["far", "near"], "lowest predicted latency 930ms of 2"),
    ("a remote one must be faster by the locality margin",
     [candidate("near", ttft=100, tpot=5), candidate("far", ttft=130, tpot=4.2, added_latency_ms=80, local=False)],
     {"locality_margin": 0.2}, ["near", "far"], "lowest predicted latency 1100ms of 2"),
    ("past the margin the remote one leads",
     [candidate("near", ttft=100, tpot=5), candidate("far", ttft=130, tpot=3.5, added_latency_ms=80, local=False)],
     {"locality_margin": 0.2}, ["far", "near"], "lowest predicted latency 830ms of 2"),
    ("an unknown deployment is assumed like the others, plus its RTT",
     [candidate("near", ttft=100, tpot=5), candidate("new", added_latency_ms=80, local=False)], {},
     ["near", "new"], "lowest predicted latency 1100ms of 2"),
    ("nothing known: explore", [candidate("a"), candidate("b")], {}, ["a", "b"], "no figures yet, exploring (of 2)"),
    ("tie goes to fewer in flight",
     [candidate("a", ttft=100, tpot=5, in_flight=4), candidate("b", ttft=100, tpot=5, in_flight=1)], {},
     ["b", "a"], "lowest predicted latency 1100ms of 2"),
    ("skips the ineligible", [candidate("a", ttft=10, tpot=1, healthy=False), candidate("b", ttft=100, tpot=5)], {},
     ["b"], "lowest predicted latency 1100ms of 1"),
    ("a stream stuck before its first token moves traffic away",
     [candidate("stuck", ttft=20, tpot=5, waiting_first_token_ms=900), candidate("steady", ttft=60, tpot=5)], {},
     ["steady", "stuck"], "lowest predicted latency 1060ms of 2"),
]


@pytest.mark.parametrize(("candidates", "fields", "order", "reason"), [c[1:] for c in LATENCY_FIRST_CASES],
                         ids=[c[0] for c in LATENCY_FIRST_CASES])
def test_latency_first(candidates: list[Candidate], fields: dict[str, object], order: list[str],
                       reason: str) -> None:
    assert _order(candidates, names.LATENCY_FIRST, **fields) == (order, reason)


def test_a_stream_waiting_behind_an_engine_queue_is_a_floor_not_the_estimate() -> None:
    # A probe has waited 45 ms so far for its first token, longer than the window's answers took; the engine says
    # 8 requests wait for its 4 slots, which the size model turns into seconds. The wait so far must not pass for
    # the TTFT: it would rank the queued deployment below a steady 60 ms one.
    model = LatencyModel("dense", decay_s=2.0, stale_after_s=10.0)
    for step in range(5):
        model.learn(RequestSize(100, 100, 1.0, 0.0, 100), step * 0.1, ttft_ms=20.0, tpot_ms=10.0)
    queued = candidate("queued", ttft=20, tpot=10, waiting_first_token_ms=45,
                       engine=EngineFigures(requests_running=4, requests_waiting=8))._replace(
        latency_model=model.view(0.5))
    order, reason = _order([queued, candidate("steady", ttft=60, tpot=10)], names.LATENCY_FIRST, streaming=True,
                           output_tokens=100)
    assert order == ["steady", "queued"], reason
    # With no queue the wait so far is the best evidence, as before.
    alone = queued._replace(engine=EngineFigures(requests_running=1, requests_waiting=0))
    assert _order([alone], names.LATENCY_FIRST, streaming=True, output_tokens=100)[1] == (
        "lowest predicted ttft 45ms of 1")


def _priced(name: str, latency_ms: float, cost_out: float) -> Candidate:
    return candidate(name, ttft=latency_ms, tpot=0.0, cost_in=0.0, cost_out=cost_out)


COST_FIRST_CASES = [
    ("cheapest within budget",
     [_priced("fast", 100, 3.0), _priced("mid", 400, 2.0), _priced("slow", 900, 1.0)],
     {"budget_ms": 500}, ["mid", "fast", "slow"],
     "cheapest within the budget 500ms: $0.0004/req predicted latency 400ms; 1 over the budget 500ms"),
    ("none within budget: fastest", [_priced("a", 900, 1.0), _priced("b", 700, 2.0)], {"budget_ms": 500},
     ["b", "a"], "none within the latency budget 500ms; fastest predicted latency 700ms"),
    ("no budget: cheapest", [_priced("a", 100, 3.0), _priced("b", 5000, 1.0)], {"budget_ms": 0},
     ["b", "a"], "cheapest: $0.0002/req predicted latency 5000ms"),
    ("equal cost: faster first", [_priced("a", 300, 1.0), _priced("b", 200, 1.0)], {"budget_ms": 500},
     ["b", "a"], "cheapest within the budget 500ms: $0.0002/req predicted latency 200ms"),
    ("input tokens are priced", [candidate("a", ttft=10, tpot=0, cost_in=5.0, cost_out=0.0),
                                 candidate("b", ttft=10, tpot=0, cost_in=0.0, cost_out=5.0)],
     {"input_tokens": 10, "output_tokens": 1000}, ["a", "b"], "cheapest: $0.00005/req predicted latency 10ms"),
    ("streams budget their ttft", [candidate("a", ttft=90, tpot=9, cost_out=1.0),
                                   candidate("b", ttft=80, tpot=1, cost_out=2.0)],
     {"budget_ms": 100, "streaming": True}, ["a", "b"],
     "cheapest within the budget 100ms: $0.0003/req predicted ttft 90ms"),
]


@pytest.mark.parametrize(("candidates", "fields", "order", "reason"), [c[1:] for c in COST_FIRST_CASES],
                         ids=[c[0] for c in COST_FIRST_CASES])
def test_cost_first(candidates: list[Candidate], fields: dict[str, object], order: list[str],
                    reason: str) -> None:
    assert _order(candidates, names.COST_FIRST, **fields) == (order, reason)


@pytest.mark.parametrize("policy", [p for p in names.POLICIES if p != names.FIXED_RATIO])
def test_the_latency_budget_caps_every_policy(policy: str) -> None:
    within = candidate("within", ttft=100, tpot=1, weight=1, cost_out=9.0, quality=0.1, max_concurrency=8)
    over = candidate("over", ttft=900, tpot=1, weight=10, cost_out=0.1, quality=1.0, max_concurrency=64)
    for _ in range(3):
        order, _ = _order([over, within], policy, budget_ms=500)
        assert order == ["within", "over"]


def test_a_deployment_due_a_trial_goes_first_once_per_decision() -> None:
    pool = [candidate("fast", ttft=50, tpot=2),
            candidate("recovering", ttft=900, tpot=30, breaker=BreakerState.HALF_OPEN, trial=TrialReason.HALF_OPEN),
            candidate("idle", ttft=60, tpot=3, trial=TrialReason.STALE)]
    decision = decide(pool, request(names.LATENCY_FIRST), PolicyState(), random.Random(0))
    assert [d.name for d in decision.ordered] == ["recovering", "fast", "idle"]
    assert decision.trial == "recovering"
    assert decision.reason == ("trial of recovering (half-open: one trial closes or re-opens its breaker); "
                               "then lowest predicted latency 450ms of 3")
    already_first = decide([pool[0]._replace(trial=TrialReason.STALE), pool[2]], request(names.LATENCY_FIRST),
                           PolicyState(), random.Random(0))
    assert already_first.trial is None  # the policy's pick anyway: no trial to note


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
    candidates = [candidate("a", weight=1, ttft=50, tpot=0), candidate("b", weight=2), candidate("z", weight=0)]
    assert _order(candidates, names.WEIGHTED) == (["b", "a", "z"], "smooth weighted: weight 2 of 3 (67%)")


def _scored_pool() -> list[Candidate]:
    return [
        candidate("fast", ttft=100, tpot=0, cost_in=0.0, cost_out=4.0, quality=0.6),
        candidate("cheap", ttft=900, tpot=0, cost_in=0.0, cost_out=1.0, quality=0.6),
        candidate("smart", ttft=500, tpot=0, cost_in=0.0, cost_out=4.0, quality=1.0),
    ]


@pytest.mark.parametrize(
    ("priority", "order", "best_score"),
    [
        # Idle engines (load 0) add the whole load weight to every score.
        # speed (0.6, 0.2, 0.1, 0.1): fast 0.6+0+0.06+0.1, smart 0.3+0+0.1+0.1, cheap 0+0.2+0.06+0.1
        ("speed", ["fast", "smart", "cheap"], 0.76),
        # cost (0.2, 0.6, 0.1, 0.1): cheap 0+0.6+0.06+0.1, fast 0.2+0+0.06+0.1, smart 0.1+0+0.1+0.1
        ("cost", ["cheap", "fast", "smart"], 0.76),
        # quality (0.1, 0.2, 0.6, 0.1): smart 0.05+0+0.6+0.1, cheap 0+0.2+0.36+0.1, fast 0.1+0+0.36+0.1
        ("quality", ["smart", "cheap", "fast"], 0.75),
        # balanced (0.35, 0.25, 0.25, 0.15): fast 0.35+0+0.15+0.15, smart 0.175+0+0.25+0.15, cheap 0.25+0.15+0.15
        ("balanced", ["fast", "smart", "cheap"], 0.65),
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


def test_the_presets_are_the_documented_weights() -> None:
    assert names.PRIORITY_PRESETS == {"speed": (0.6, 0.2, 0.1, 0.1), "cost": (0.2, 0.6, 0.1, 0.1),
                                      "quality": (0.1, 0.2, 0.6, 0.1), "balanced": (0.35, 0.25, 0.25, 0.15)}


def test_pushed_score_weights_replace_the_preset() -> None:
    decision = decide(_scored_pool(), request(names.SCORED, priority="speed", score_weights=(0.0, 0.0, 2.0, 0.0)),
                      PolicyState(), random.Random(0))
    assert decision.ordered[0].name == "smart"
    assert decision.reason == "best score 1.000 (pushed weights) of 3"


def test_scored_single_candidate_gets_full_latency_and_cost_terms() -> None:
    decision = decide([candidate("a", quality=0.5)], request(names.SCORED, priority="speed"), PolicyState(),
                      random.Random(0))
    assert decision.figures[0].score == pytest.approx(0.7 + 0.2 + 0.1 * 0.5)


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
     [candidate("r", ttft=10, tpot=0, local=False), candidate("l2", ttft=90, tpot=0), candidate("l1", ttft=50, tpot=0)],
     ["l1", "l2", "r"], "local share 100%: drew local, lowest predicted latency 50.0ms"),
    ("all remote", 0.0, [candidate("l", ttft=10, tpot=0), candidate("r", ttft=90, tpot=0, local=False)], ["r", "l"],
     "local share 0%: drew remote, lowest predicted latency 90.0ms"),
    ("local full: spills over", 1.0, [candidate("l", in_flight=1, max_concurrency=1),
                                      candidate("r", ttft=90, tpot=0, local=False)],
     ["r"], "local share 100%: drew local, none eligible; spilled to eu-west predicted latency 90.0ms"),
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
