"""The leader's tick: tables per region, effective policy, damped weights, ejection, material change."""

from __future__ import annotations

import pytest
from compute_fixtures import LLAMA, SMALL, catalog, llama_stats, route, run_ticks, stats, weights
from hypothesis import example, given, settings
from hypothesis import strategies as st

from control_plane.tables.compute import (
    FIXED_REASON,
    ComputeState,
    changed_materially,
    compute_tables,
)
from control_plane.tables.ejection import KEPT_REASON, PROBING_REASON, Health
from meridian_common.table_hash import content_hash
from meridian_proto import policy_pb2, routing_pb2

CONFIG = catalog()
SETTINGS = CONFIG.compute
NAMES = ("vllm-a", "vllm-b", "vllm-c")
EPSILON = 1e-9

ttft = st.floats(min_value=1.0, max_value=20_000.0)
tpot = st.floats(min_value=0.5, max_value=200.0)
error_count = st.integers(min_value=0, max_value=100)
tick_stats = st.fixed_dictionaries({name: st.tuples(ttft, tpot, error_count) for name in NAMES})


def _stats(figures: dict[str, tuple[float, float, int]]) -> dict:
    """name -> (TTFT, TPOT, errors)."""
    return llama_stats({n: f[0] for n, f in figures.items()}, {n: f[2] for n, f in figures.items()},
                       tpots_ms={n: f[1] for n, f in figures.items()})


def _doc(**fields: object) -> policy_pb2.PolicyDocument:
    return policy_pb2.PolicyDocument(models=[policy_pb2.ModelPolicy(region="eu-west", model=LLAMA, **fields)])


def _material_changes(history: list[dict[str, routing_pb2.RoutingTable]], region: str = "eu-west"
                      ) -> list[int]:
    """Ticks at which the shell would publish: each table is compared with the last one published."""
    published = history[0][region]
    changes = []
    for index, tables in enumerate(history[1:], start=1):
        if changed_materially(published, tables[region]):
            changes.append(index)
            published = tables[region]
    return changes


def test_every_region_gets_every_model_with_every_deployment() -> None:
    tables, state = compute_tables(CONFIG, policy_pb2.PolicyDocument(), {}, ComputeState(), 1000.0)
    assert sorted(tables) == ["ap-south", "eu-west", "us-east"]
    for region, table in tables.items():
        assert table.region == region and table.source == "control-plane"
        assert (table.version, table.epoch) == (0, 0)
        assert table.computed_at_unix_ms == 1_000_000
        assert table.content_hash == content_hash(table.models)
        assert [m.model for m in table.models] == sorted([LLAMA, SMALL])
        assert [d.name for d in route(tables, region, LLAMA).deployments] == list(NAMES)
    assert state.computed_at == 1000.0


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("eu-west", {"vllm-a": 0, "vllm-b": 0, "vllm-c": 80, "ollama-a": 120, "ollama-b": 80}),
        ("us-east", {"vllm-a": 80, "vllm-b": 80, "vllm-c": 0, "ollama-a": 200, "ollama-b": 0}),
        ("ap-south", {"vllm-a": 120, "vllm-b": 120, "vllm-c": 200, "ollama-a": 0, "ollama-b": 200}),
    ],
)
def test_remote_deployments_carry_exactly_the_rtt(region: str, expected: dict[str, float]) -> None:
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), {}, ComputeState(), 1000.0)
    seen = {d.name: d.added_latency_ms for m in tables[region].models for d in m.deployments}
    assert seen == expected


def test_policy_document_overrides_catalog_defaults_for_its_region_only() -> None:
    document = _doc(policy="cost-first", latency_budget_ms=800, priority="speed", local_ratio=0.8,
                    allowed_policies=["cost-first", "latency-first"],
                    client_limits=routing_pb2.RateLimits(rpm=600, tpm=100_000),
                    deployment_limits=routing_pb2.RateLimits(rpm=50))
    tables, _ = compute_tables(CONFIG, document, {}, ComputeState(), 1000.0)
    eu = route(tables, "eu-west", LLAMA)
    assert (eu.policy, eu.latency_budget_ms, eu.priority, eu.local_ratio) == ("cost-first", 800, "speed", 0.8)
    assert list(eu.allowed_policies) == ["cost-first", "latency-first"]
    assert (eu.client_limits.rpm, eu.client_limits.tpm) == (600, 100_000)
    assert [(d.rpm_limit, d.tpm_limit) for d in eu.deployments] == [(50, 0)] * 3
    us = route(tables, "us-east", LLAMA)
    assert (us.policy, us.latency_budget_ms, us.priority, us.local_ratio) == ("weighted", 0, "balanced", 1.0)
    assert not us.HasField("client_limits")


def test_operator_fixed_weights_apply_at_once() -> None:
    _, state = run_ticks(CONFIG, [llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100})] * 3)
    tables, _ = compute_tables(CONFIG, _doc(deployment_weights={"vllm-a": 0.9, "vllm-b": 0.1}),
                               llama_stats({"vllm-a": 900, "vllm-b": 100, "vllm-c": 100}), state, 1003.0)
    assert weights(tables) == pytest.approx({"vllm-a": 0.9, "vllm-b": 0.1, "vllm-c": 0.0})
    assert {d.reason for d in route(tables, "eu-west", LLAMA).deployments if d.weight} == {FIXED_REASON}


def test_merged_medians_are_copied_to_the_deployments() -> None:
    figures = llama_stats({"vllm-a": 100, "vllm-b": 250}, {"vllm-b": 10}, tpots_ms={"vllm-a": 12, "vllm-b": 35})
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    by_name = {d.name: d for d in route(tables, "us-east", LLAMA).deployments}
    a = figures[(LLAMA, "vllm-a")]
    assert (by_name["vllm-a"].ttft_ms, by_name["vllm-a"].tpot_ms) == pytest.approx((a.ttft_p50_ms, a.tpot_p50_ms))
    assert by_name["vllm-b"].error_rate == pytest.approx(0.1)
    assert (by_name["vllm-c"].ttft_ms, by_name["vllm-c"].tpot_ms, by_name["vllm-c"].error_rate) == (0.0, 0.0, 0.0)


def test_typical_output_tokens_is_the_catalogs_until_enough_answers_are_seen() -> None:
    minimum = SETTINGS.min_requests_for_weight
    few = {(LLAMA, "vllm-a"): stats(LLAMA, "vllm-a", 100, requests=minimum - 1, answer_tokens=40)}
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), few, ComputeState(), 1000.0)
    assert route(tables, "eu-west", LLAMA).typical_output_tokens == CONFIG.models[LLAMA].typical_output_tokens


def test_typical_output_tokens_is_the_mean_answer_over_every_deployment_of_the_model() -> None:
    figures = {
        (LLAMA, "vllm-a"): stats(LLAMA, "vllm-a", 100, requests=30, answer_tokens=100),
        (LLAMA, "vllm-c"): stats(LLAMA, "vllm-c", 100, requests=20, errors=10, answer_tokens=600),
        (SMALL, "ollama-a"): stats(SMALL, "ollama-a", 100, requests=50, answer_tokens=9),
    }
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    for region in tables:
        assert route(tables, region, LLAMA).typical_output_tokens == 225  # (30 x 100 + 10 x 600) / 40
        assert route(tables, region, SMALL).typical_output_tokens == 9


def test_answers_whose_tokens_nobody_counted_keep_the_catalogs_length() -> None:
    figures = llama_stats({"vllm-a": 100, "vllm-b": 100})
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    assert route(tables, "eu-west", LLAMA).typical_output_tokens == CONFIG.models[LLAMA].typical_output_tokens


def test_a_deployment_writing_long_answers_is_not_penalised() -> None:
    # Same TTFT and TPOT; vllm-b's clients ask for answers ten times as long, so its answers take ten times
    # as long. Its pace, not its answers' time, counts.
    figures = {
        (LLAMA, "vllm-a"): stats(LLAMA, "vllm-a", 150, answer_tokens=100),
        (LLAMA, "vllm-b"): stats(LLAMA, "vllm-b", 150, answer_tokens=1000),
    }
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    eu = weights(tables)
    assert eu["vllm-a"] == pytest.approx(eu["vllm-b"])


@pytest.mark.parametrize(
    ("answer_tokens", "faster"),
    [(2, "vllm-a"), (400, "vllm-b")],
)
def test_the_models_answer_length_weighs_ttft_against_tpot(answer_tokens: int, faster: str) -> None:
    # vllm-a starts fast but writes slowly, vllm-b the other way round.
    figures = {
        (LLAMA, "vllm-a"): stats(LLAMA, "vllm-a", 100, tpot_ms=40, answer_tokens=answer_tokens),
        (LLAMA, "vllm-b"): stats(LLAMA, "vllm-b", 400, tpot_ms=15, answer_tokens=answer_tokens),
    }
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    eu = weights(tables)
    assert max(("vllm-a", "vllm-b"), key=eu.__getitem__) == faster


def test_a_pushed_policys_score_weights_reach_the_route() -> None:
    score = routing_pb2.ScoreWeights(latency=0.2, cost=0.7, quality=0.1)
    tables, _ = compute_tables(CONFIG, _doc(score_weights=score), {}, ComputeState(), 1000.0)
    assert route(tables, "eu-west", LLAMA).score_weights == score
    assert not route(tables, "us-east", LLAMA).HasField("score_weights")


def test_faster_nearer_healthier_deployments_weigh_more() -> None:
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(),
                               llama_stats({"vllm-a": 100, "vllm-b": 300, "vllm-c": 100}, {"vllm-a": 0}),
                               ComputeState(), 1000.0)
    eu = weights(tables)
    assert eu["vllm-a"] > eu["vllm-c"] > eu["vllm-b"]
    us = weights(tables, "us-east")
    assert us["vllm-c"] > us["vllm-a"]


@settings(max_examples=60, deadline=None)
@given(st.lists(tick_stats, min_size=1, max_size=6))
def test_weights_are_non_negative_and_sum_to_one_over_deployments_in_service(sequence: list) -> None:
    history, _ = run_ticks(CONFIG, [_stats(figures) for figures in sequence])
    for tables in history:
        for table in tables.values():
            for model in table.models:
                serving = [d for d in model.deployments if not d.ejected]
                assert serving, "a model lost every deployment"
                assert all(d.weight >= 0 for d in model.deployments)
                assert all(d.weight == 0 for d in model.deployments if d.ejected)
                assert sum(d.weight for d in serving) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(tick_stats, st.lists(tick_stats, min_size=1, max_size=8))
def test_one_tick_never_moves_a_weight_more_than_the_step_limit(first: dict, sequence: list) -> None:
    # Healthy figures only: ejection changes the set of deployments, which is not a damped move.
    healthy = [{n: (f[0], f[1], 0) for n, f in figures.items()} for figures in [first, *sequence]]
    history, _ = run_ticks(CONFIG, [_stats(figures) for figures in healthy])
    for before, after in zip(history, history[1:], strict=False):
        for region in before:
            old, new = weights(before, region), weights(after, region)
            assert max(abs(new[n] - old[n]) for n in NAMES) <= SETTINGS.max_weight_step + EPSILON
            shares = [new[n] for n in NAMES]
            assert min(shares) >= SETTINGS.min_weight - EPSILON
            assert max(shares) <= SETTINGS.max_weight + EPSILON


@settings(max_examples=30, deadline=None)
# One deployment turning 1.5 times as slow once crossed the hysteresis at tick 77.
@example(start={"vllm-a": (1.0, 0.5, 0), "vllm-b": (1.0, 0.5, 0), "vllm-c": (1.0, 0.5, 0)},
         end={"vllm-a": (1.0, 0.5, 0), "vllm-b": (1.0, 0.75, 0), "vllm-c": (1.0, 0.5, 0)})
@given(tick_stats, tick_stats)
def test_stable_input_converges_then_stops_changing(start: dict, end: dict) -> None:
    start = {n: (f[0], f[1], 0) for n, f in start.items()}
    end = {n: (f[0], f[1], 0) for n, f in end.items()}
    history, _ = run_ticks(CONFIG, [_stats(start)] + [_stats(end)] * 100)
    changes = _material_changes(history)
    assert not [c for c in changes if c > 60], changes


@settings(max_examples=30, deadline=None)
@given(st.tuples(ttft, tpot), st.tuples(ttft, tpot), st.tuples(ttft, tpot), st.tuples(ttft, tpot))
def test_alternating_fast_and_slow_figures_do_not_flip_weights_every_tick(
    a1: tuple[float, float], a2: tuple[float, float], b1: tuple[float, float], b2: tuple[float, float]
) -> None:
    one = _stats({"vllm-a": (*a1, 0), "vllm-b": (*b1, 0), "vllm-c": (300, 20, 0)})
    two = _stats({"vllm-a": (*a2, 0), "vllm-b": (*b2, 0), "vllm-c": (300, 20, 0)})
    history, _ = run_ticks(CONFIG, [one, two] * 50)
    changes = _material_changes(history)
    assert len(changes) <= 15, changes
    assert not [c for c in changes if c > 60], changes


def test_latency_that_follows_load_settles_instead_of_oscillating() -> None:
    # Each deployment slows down with the share of traffic it gets, as a saturating backend would: its queue
    # delays the first token and its batch the next ones.
    base = {"vllm-a": (100.0, 15.0), "vllm-b": (150.0, 25.0), "vllm-c": (80.0, 20.0)}
    state = ComputeState()
    history = []
    shares = dict.fromkeys(NAMES, 1 / 3)
    for tick in range(120):
        load = {n: 1 + 4 * shares[n] for n in NAMES}
        figures = llama_stats({n: base[n][0] * load[n] for n in NAMES},
                              tpots_ms={n: base[n][1] * load[n] for n in NAMES})
        tables, state = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, state, 1000.0 + tick)
        shares = weights(tables)
        history.append(tables)
    assert not [c for c in _material_changes(history) if c > 60]


def test_an_erroring_deployment_is_ejected_with_its_reason() -> None:
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(),
                               llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100}, {"vllm-b": 60}),
                               ComputeState(), 1000.0)
    b = next(d for d in route(tables, "eu-west", LLAMA).deployments if d.name == "vllm-b")
    assert b.ejected and b.weight == 0 and "error rate 0.600 > 0.500" in b.reason


@pytest.mark.parametrize(
    ("threshold", "figures", "reason"),
    [
        ({"max_ttft_p95_ms": 5000}, llama_stats({"vllm-a": 100, "vllm-b": 6000, "vllm-c": 100}), "TTFT p95"),
        ({"max_tpot_p95_ms": 50},
         llama_stats(dict.fromkeys(NAMES, 100.0), tpots_ms={"vllm-a": 20, "vllm-b": 70, "vllm-c": 20}),
         "TPOT p95"),
    ],
    ids=["ttft", "tpot"],
)
def test_latency_ejection_uses_the_region_policy_threshold(threshold: dict, figures: dict, reason: str) -> None:
    tables, _ = compute_tables(CONFIG, _doc(**threshold), figures, ComputeState(), 1000.0)
    assert [d.ejected for d in route(tables, "eu-west", LLAMA).deployments] == [False, True, False]
    assert reason in _b(tables).reason
    assert [d.ejected for d in route(tables, "us-east", LLAMA).deployments] == [False, False, False]


def test_long_answers_never_eject() -> None:
    # 4000 tokens at 20 ms each: 80 s answers from a backend within both thresholds.
    figures = {(LLAMA, name): stats(LLAMA, name, 100, answer_tokens=4000 if name == "vllm-b" else 50)
               for name in NAMES}
    tables, _ = compute_tables(CONFIG, _doc(max_ttft_p95_ms=5000, max_tpot_p95_ms=50), figures, ComputeState(),
                               1000.0)
    assert not any(d.ejected for d in route(tables, "eu-west", LLAMA).deployments)


def test_too_few_requests_never_eject() -> None:
    figures = llama_stats({"vllm-a": 100, "vllm-b": 100}, {"vllm-b": 5}, requests=5)
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    assert not any(d.ejected for d in route(tables, "eu-west", LLAMA).deployments)


def test_a_model_never_loses_every_deployment() -> None:
    figures = llama_stats(dict.fromkeys(NAMES, 100.0), {"vllm-a": 90, "vllm-b": 70, "vllm-c": 95})
    history, _ = run_ticks(CONFIG, [figures] * 5)
    for tables in history:
        deployments = route(tables, "eu-west", LLAMA).deployments
        assert [d.name for d in deployments if not d.ejected] == ["vllm-b"]
        kept = next(d for d in deployments if not d.ejected)
        assert kept.weight == pytest.approx(1.0) and kept.reason == KEPT_REASON
    assert _material_changes(history) == []


def test_ejected_deployment_is_probed_then_readmitted_or_ejected_again() -> None:
    bad = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100}, {"vllm-b": 80})
    quiet = llama_stats({"vllm-a": 100, "vllm-c": 100})
    good = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100})
    probe = SETTINGS.probe_after_s
    tables, state = compute_tables(CONFIG, policy_pb2.PolicyDocument(), bad, ComputeState(), 1000.0)
    assert _b(tables).ejected

    tables, state = compute_tables(CONFIG, policy_pb2.PolicyDocument(), quiet, state, 1000.0 + probe - 1)
    assert _b(tables).ejected, "re-admitted before the probe period"

    tables, state = compute_tables(CONFIG, policy_pb2.PolicyDocument(), quiet, state, 1000.0 + probe)
    assert not _b(tables).ejected and _b(tables).reason == PROBING_REASON
    assert _b(tables).weight == pytest.approx(SETTINGS.probe_weight)

    still_bad, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), bad, state, 1001.0 + probe)
    assert _b(still_bad).ejected

    healthy, after = compute_tables(CONFIG, policy_pb2.PolicyDocument(), good, state, 1001.0 + probe)
    assert not _b(healthy).ejected and _b(healthy).reason != PROBING_REASON
    # Back in the weighted split, starting from the probe weight rather than jumping to its full share.
    assert _b(healthy).weight <= SETTINGS.probe_weight + SETTINGS.max_weight_step + EPSILON
    history, _ = run_ticks(CONFIG, [good] * 60, state=after, start_s=1002.0 + probe)
    assert _b(history[-1]).weight > 0.25


def _b(tables: dict[str, routing_pb2.RoutingTable]) -> routing_pb2.Deployment:
    return next(d for d in route(tables, "eu-west", LLAMA).deployments if d.name == "vllm-b")


def test_new_leader_resumes_from_the_published_tables() -> None:
    skewed = llama_stats({"vllm-a": 100, "vllm-b": 1000, "vllm-c": 100}, tpots_ms={"vllm-b": 60})
    history, _ = run_ticks(CONFIG, [skewed] * 40)
    resumed = ComputeState.from_tables(history[-1], now=2000.0)
    even = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100})
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), even, resumed, 2001.0)
    old, new = weights(history[-1]), weights(tables)
    assert max(abs(new[n] - old[n]) for n in NAMES) <= SETTINGS.max_weight_step + EPSILON


def test_a_resumed_ejection_keeps_the_tables_figures() -> None:
    bad = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100}, {"vllm-b": 80}, tpots_ms={"vllm-b": 45})
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), bad, ComputeState(), 1000.0)
    health = ComputeState.from_tables(tables, now=2000.0).models[("eu-west", LLAMA)].health["vllm-b"]
    b = _b(tables)
    assert (health.state, health.since, health.reason) == (Health.EJECTED, 2000.0, b.reason)
    assert (health.error_rate, health.ttft_p95_ms, health.tpot_p95_ms) == (b.error_rate, b.ttft_ms, b.tpot_ms)


def _table(weights_by_name: dict[str, float], ejected: tuple[str, ...] = (), policy: str = "weighted",
           ttft_ms: float = 100.0, tpot_ms: float = 20.0, typical_output_tokens: int = 256,
           ) -> routing_pb2.RoutingTable:
    return routing_pb2.RoutingTable(region="eu-west", version=3, models=[routing_pb2.ModelRoute(
        model=LLAMA, policy=policy, typical_output_tokens=typical_output_tokens,
        deployments=[routing_pb2.Deployment(name=n, weight=w, ejected=n in ejected, ttft_ms=ttft_ms,
                                            tpot_ms=tpot_ms)
                     for n, w in weights_by_name.items()])])


BASE = {"a": 0.5, "b": 0.3, "c": 0.2}


@pytest.mark.parametrize(
    ("new", "material"),
    [
        (_table(BASE), False),
        (_table(BASE, ttft_ms=900.0), False),
        (_table(BASE, tpot_ms=45.0), False),
        (_table(BASE, typical_output_tokens=700), False),
        (_table({"a": 0.54, "b": 0.27, "c": 0.19}), False),
        (_table({"a": 5.0, "b": 3.0, "c": 2.0}), False),
        (_table({"a": 0.56, "b": 0.26, "c": 0.18}), True),
        (_table({"a": 0.5, "b": 0.5, "c": 0.0}, ejected=("c",)), True),
        (_table(BASE, policy="cost-first"), True),
        (_table({"a": 0.5, "b": 0.5}), True),
    ],
    ids=["same", "ttft-only", "tpot-only", "typical-tokens-only", "small-move", "same-after-normalising",
         "large-move", "ejection", "policy", "deployment-gone"],
)
def test_changed_materially(new: routing_pb2.RoutingTable, material: bool) -> None:
    assert changed_materially(_table(BASE), new) is material


def test_nothing_published_yet_is_a_material_change() -> None:
    assert changed_materially(None, _table(BASE))


def test_stats_of_other_models_do_not_leak() -> None:
    figures = {(SMALL, "ollama-a"): stats(SMALL, "ollama-a", 100, errors=90)}
    tables, _ = compute_tables(CONFIG, policy_pb2.PolicyDocument(), figures, ComputeState(), 1000.0)
    assert not any(d.ejected for d in route(tables, "eu-west", LLAMA).deployments)
    assert [d.ejected for d in route(tables, "eu-west", SMALL).deployments] == [True, False]
