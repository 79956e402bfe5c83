"""Policy documents: parsing, validation naming each entry, set_field, YAML round trip and table diffs."""

from __future__ import annotations

import pytest
import yaml
from compute_fixtures import LLAMA, SMALL, catalog, llama_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.policy.document import (
    PolicyError,
    merge_model_policy,
    parse_policy_document,
    policy_diff,
    policy_to_yaml,
    set_field,
    validate_policy_document,
)
from control_plane.tables.compute import ComputeState, compute_tables
from control_plane.tables.diff import table_diff
from meridian_common.policy_names import POLICIES
from meridian_proto import policy_pb2

CATALOG = catalog()

EXAMPLE = """models:
  - region: eu-west
    model: llama-3.3-70b
    policy: cost-first
    latency_budget_ms: 800
    priority: balanced
    max_error_rate: 0.3
    max_ttft_p95_ms: 2000
    max_tpot_p95_ms: 80
    client_limits: {rpm: 600, tpm: 100000}
    deployment_limits: {rpm: 0, tpm: 0}
    local_ratio: 0.8
    allowed_policies: [cost-first, latency-first]
    deployment_weights: {vllm-a: 0.7, vllm-b: 0.3}
    score_weights: {latency: 0.5, cost: 0.3, quality: 0.2}
"""


def test_the_documented_example_parses() -> None:
    document = parse_policy_document(EXAMPLE, CATALOG)
    (entry,) = document.models
    assert (entry.region, entry.model, entry.policy) == ("eu-west", LLAMA, "cost-first")
    assert entry.latency_budget_ms == 800
    assert (entry.max_ttft_p95_ms, entry.max_tpot_p95_ms) == (2000, 80)
    assert (entry.client_limits.rpm, entry.client_limits.tpm) == (600, 100_000)
    assert dict(entry.deployment_weights) == {"vllm-a": 0.7, "vllm-b": 0.3}
    assert entry.score_weights.latency == 0.5 and entry.HasField("deployment_limits")


def _entry_yaml(**fields: object) -> str:
    entry = {"region": "eu-west", "model": LLAMA, **fields}
    return yaml.safe_dump({"models": [{"region": "us-east", "model": SMALL}, entry]})


LABEL = f"models[1] (eu-west/{LLAMA}): "


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"region": "eu-wst"}, "models[1] (eu-wst/llama-3.3-70b): unknown region 'eu-wst'; expected one of"),
        ({"model": "gpt-5"}, "models[1] (eu-west/gpt-5): unknown model 'gpt-5'"),
        ({"policy": "fastest"}, LABEL + f"unknown policy 'fastest'; expected one of {', '.join(POLICIES)}"),
        ({"priority": "urgent"}, LABEL + "unknown priority 'urgent'"),
        ({"allowed_policies": ["fastest"]}, LABEL + "allowed_policies has unknown policies ['fastest']"),
        ({"policy": "weighted", "allowed_policies": ["cost-first"]},
         LABEL + "policy 'weighted' is not among allowed_policies ['cost-first']"),
        ({"latency_budget_ms": -5}, LABEL + "latency_budget_ms must be a finite number >= 0"),
        ({"max_ttft_p95_ms": -1}, LABEL + "max_ttft_p95_ms must be a finite number >= 0"),
        ({"max_tpot_p95_ms": float("inf")}, LABEL + "max_tpot_p95_ms must be a finite number >= 0"),
        ({"max_tpot_p95_ms": "slow"}, LABEL + "max_tpot_p95_ms must be a number, got 'slow'"),
        ({"max_p95_ms": 5000}, LABEL + "max_p95_ms is no longer supported; use max_ttft_p95_ms and/or "
                                       "max_tpot_p95_ms instead: a whole answer's time grows with the answer's length"),
        ({"latency_budget_ms": "fast"}, LABEL + "latency_budget_ms must be a number, got 'fast'"),
        ({"max_error_rate": 1.5}, LABEL + "max_error_rate must be within [0, 1]"),
        ({"local_ratio": -0.1}, LABEL + "local_ratio must be within [0, 1]"),
        ({"deployment_weights": {"vllm-a": 0.7, "vllm-b": 0.2}}, LABEL + "deployment_weights must sum to 1"),
        ({"deployment_weights": {"vllm-a": 0.5, "vllm-z": 0.5}},
         LABEL + "deployment_weights names unknown deployments ['vllm-z']"),
        ({"deployment_weights": {"vllm-a": 1.5, "vllm-b": -0.5}},
         LABEL + "deployment_weights must be finite and >= 0"),
        ({"score_weights": {"latency": 0.5, "cost": 0.5, "quality": 0.5}},
         LABEL + "score_weights must sum to 1"),
        ({"score_weights": {"latency": 0.0, "cost": 0.0, "quality": 0.0}}, LABEL + "score_weights must sum to 1"),
        ({"score_weights": {"latency": 1.5, "cost": -0.5, "quality": 0.0}},
         LABEL + "score_weights must be finite and >= 0: ['cost']"),
        ({"score_weights": {"latency": float("nan"), "cost": 1.0, "quality": 0.0}},
         LABEL + "score_weights must be finite and >= 0: ['latency']"),
        ({"score_weights": {"speed": 1.0}}, LABEL + "score_weights has unknown keys ['speed']"),
        ({"client_limits": {"rpm": -1}}, LABEL + "client_limits.rpm must be a whole number"),
        ({"client_limits": {"rpm": 1.5}}, LABEL + "client_limits.rpm must be a whole number"),
        ({"deployment_limits": {"burst": 3}}, LABEL + "deployment_limits has unknown keys ['burst']"),
        ({"latncy_budget_ms": 3}, LABEL + "unknown field 'latncy_budget_ms'"),
        ({"policy": 3}, LABEL + "policy must be a non-empty string, got 3"),
        ({"allowed_policies": "cost-first"}, LABEL + "allowed_policies must be a list of names"),
    ],
)
def test_errors_name_the_entry(fields: dict, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy_document(_entry_yaml(**fields), CATALOG)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_weights_within_the_tolerance_are_accepted() -> None:
    nearly_one = {"vllm-a": 0.7, "vllm-b": 0.3 + 5e-7}
    document = parse_policy_document(_entry_yaml(deployment_weights=nearly_one), CATALOG)
    assert len(document.models) == 2


def test_every_problem_is_listed_not_just_the_first() -> None:
    text = yaml.safe_dump({"models": [
        {"region": "eu-west", "model": LLAMA, "policy": "fastest", "max_error_rate": 2},
        "not a mapping",
        {"region": "mars", "model": SMALL},
        {"region": "eu-west", "model": LLAMA},
    ], "extra": 1})
    with pytest.raises(PolicyError) as caught:
        parse_policy_document(text, CATALOG)
    problems = caught.value.problems
    assert problems[0].startswith("unknown top-level field 'extra'")
    assert [p.split(":")[0] for p in problems[1:]] == [
        f"models[0] (eu-west/{LLAMA})", f"models[0] (eu-west/{LLAMA})", "models[1]",
        f"models[2] (mars/{SMALL})", f"models[3] (eu-west/{LLAMA})",
    ]
    assert "duplicate of models[0]" in problems[-1]
    assert "5 problems" not in str(caught.value) and f"{len(problems)} problems" in str(caught.value)


@pytest.mark.parametrize("text", ["models: [", "- a\n- b", "models: {a: 1}"])
def test_malformed_documents_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy_document(text, CATALOG)


def test_an_empty_document_is_valid() -> None:
    assert list(parse_policy_document("", CATALOG).models) == []
    assert list(parse_policy_document("models: []", CATALOG).models) == []


def test_validate_a_stored_document_against_a_changed_catalog() -> None:
    document = parse_policy_document(EXAMPLE, CATALOG)
    smaller = catalog(models={SMALL: CATALOG.models[SMALL].model_dump(mode="json")})
    with pytest.raises(PolicyError, match="unknown model 'llama-3.3-70b'"):
        validate_policy_document(document, smaller)


def test_set_field_then_yaml_round_trip() -> None:
    document = parse_policy_document(EXAMPLE, CATALOG)
    document.version, document.author = 7, "alice"
    changed = set_field(document, "eu-west", LLAMA, CATALOG, policy="latency-first", rpm=900,
                        latency_budget_ms=None)
    changed = set_field(changed, "us-east", SMALL, CATALOG, policy="weighted", deployment_tpm=5000)
    entry, added = changed.models
    assert (entry.policy, entry.latency_budget_ms, entry.client_limits.rpm, entry.client_limits.tpm) == (
        "latency-first", 0, 900, 100_000)
    assert (added.region, added.policy, added.deployment_limits.tpm) == ("us-east", "weighted", 5000)
    assert (changed.version, changed.author) == (7, "alice")
    text = policy_to_yaml(changed)
    assert text.startswith("# version 7\n# author alice\n")
    assert parse_policy_document(text, CATALOG).models == changed.models


def test_set_field_is_validated_like_a_document() -> None:
    document = parse_policy_document(EXAMPLE, CATALOG)
    with pytest.raises(PolicyError, match=r"models\[0\] \(eu-west/llama-3.3-70b\): unknown policy 'fastest'"):
        set_field(document, "eu-west", LLAMA, CATALOG, policy="fastest")
    with pytest.raises(PolicyError, match="unknown region 'mars'"):
        set_field(document, "mars", LLAMA, CATALOG, policy="weighted")
    with pytest.raises(PolicyError, match="cannot set \\['latency_budget'\\]"):
        set_field(document, "eu-west", LLAMA, CATALOG, latency_budget=5)
    # Names of set_field's own parameters are fields like any other, not a way to replace its arguments.
    with pytest.raises(PolicyError, match="cannot set \\['catalog', 'document'\\]"):
        set_field(document, "eu-west", LLAMA, CATALOG, document="x", catalog="y")


def test_set_field_refuses_the_replaced_p95_threshold_naming_its_replacements() -> None:
    with pytest.raises(PolicyError) as caught:
        set_field(policy_pb2.PolicyDocument(), "eu-west", LLAMA, CATALOG, max_p95_ms=5000)
    (problem,) = caught.value.problems
    assert problem.startswith(f"eu-west/{LLAMA}: max_p95_ms is no longer supported")
    assert "max_ttft_p95_ms" in problem and "max_tpot_p95_ms" in problem and "length" in problem


def test_set_field_sets_and_clears_the_latency_thresholds() -> None:
    document = set_field(policy_pb2.PolicyDocument(), "eu-west", LLAMA, CATALOG, max_ttft_p95_ms=1500,
                         max_tpot_p95_ms=60)
    (entry,) = document.models
    assert (entry.max_ttft_p95_ms, entry.max_tpot_p95_ms) == (1500, 60)
    (entry,) = set_field(document, "eu-west", LLAMA, CATALOG, max_ttft_p95_ms=None).models
    assert (entry.max_ttft_p95_ms, entry.max_tpot_p95_ms) == (0, 60)


def test_clearing_every_field_drops_the_entry() -> None:
    document = set_field(policy_pb2.PolicyDocument(), "eu-west", SMALL, CATALOG, policy="weighted")
    assert len(document.models) == 1
    assert list(set_field(document, "eu-west", SMALL, CATALOG, policy=None).models) == []


def test_merge_model_policy_changes_the_set_fields_only() -> None:
    document = parse_policy_document(EXAMPLE, CATALOG)
    changes = policy_pb2.ModelPolicy(region="eu-west", model=LLAMA, latency_budget_ms=1200, max_tpot_p95_ms=60)
    (entry,) = merge_model_policy(document, changes, CATALOG).models
    assert (entry.latency_budget_ms, entry.policy) == (1200, "cost-first")
    assert (entry.max_ttft_p95_ms, entry.max_tpot_p95_ms) == (2000, 60)


# YAML normalises control characters and line separators; operators' comments have none.
comments = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
entries = st.fixed_dictionaries(
    {"region": st.sampled_from(sorted(CATALOG.regions)), "model": st.just(LLAMA)},
    optional={
        "policy": st.sampled_from(POLICIES),
        "latency_budget_ms": st.floats(0, 1e6),
        "priority": st.sampled_from(["speed", "cost", "quality", "balanced"]),
        "max_error_rate": st.floats(0, 1),
        "max_ttft_p95_ms": st.integers(0, 100_000),
        "max_tpot_p95_ms": st.floats(0, 1000),
        "client_limits": st.fixed_dictionaries({"rpm": st.integers(0, 10**6), "tpm": st.integers(0, 10**9)}),
        "local_ratio": st.floats(0, 1),
        "deployment_weights": st.floats(0, 1).map(lambda w: {"vllm-a": w, "vllm-c": 1 - w}),
        "score_weights": st.floats(0, 1).map(lambda w: {"latency": w, "cost": 1 - w, "quality": 0.0}),
    },
)


@settings(max_examples=100, deadline=None)
@given(st.lists(entries, max_size=3, unique_by=lambda e: e["region"]), comments)
def test_yaml_round_trip(models: list[dict], comment: str) -> None:
    document = parse_policy_document(yaml.safe_dump({"models": models}), CATALOG)
    document.comment = comment
    again = parse_policy_document(policy_to_yaml(document), CATALOG)
    assert again.models == document.models and again.comment == document.comment


def _tables(document: policy_pb2.PolicyDocument, figures: dict | None = None) -> dict:
    return compute_tables(CATALOG, document, figures or {}, ComputeState(), 1000.0)[0]


def test_table_diff_shows_policy_budget_weights_and_ejections() -> None:
    before = _tables(policy_pb2.PolicyDocument())
    text = _entry_yaml(policy="cost-first", latency_budget_ms=800,
                       deployment_weights={"vllm-a": 0.75, "vllm-b": 0.25})
    document = parse_policy_document(text, CATALOG)
    bad = llama_stats({"vllm-a": 100, "vllm-b": 100, "vllm-c": 100}, {"vllm-c": 90})
    diff = table_diff(before, _tables(document, bad))
    assert diff.startswith("--- current\n+++ proposed\n@@ ap-south / llama-3.3-70b @@")
    eu_west = diff.split(f"@@ eu-west / {LLAMA} @@\n")[1].split("@@")[0].splitlines()
    assert eu_west[:4] == ["-policy: weighted", "-latency_budget_ms: 0", "+policy: cost-first",
                           "+latency_budget_ms: 800"]
    assert " priority: balanced" in eu_west
    assert "+deployment vllm-a [eu-west]: weight 0.750" in diff
    assert "+deployment vllm-c [us-east +80 ms]: EJECTED (ejected: error rate 0.900" in diff
    assert f"@@ eu-west / {SMALL} @@" not in diff
    assert diff == table_diff(before, _tables(document, bad)), "not deterministic"


def test_a_pushed_documents_score_weights_reach_the_tables_and_the_diff() -> None:
    before = _tables(policy_pb2.PolicyDocument())
    document = parse_policy_document(_entry_yaml(score_weights={"latency": 0.2, "cost": 0.7, "quality": 0.1}),
                                     CATALOG)
    after = _tables(document)
    eu_west = next(r for r in after["eu-west"].models if r.model == LLAMA)
    assert (eu_west.score_weights.latency, eu_west.score_weights.cost, eu_west.score_weights.quality) == (
        0.2, 0.7, 0.1)
    assert "+score_weights: latency 0.2 cost 0.7 quality 0.1 load 0" in table_diff(before, after)


def test_table_diff_of_equal_tables() -> None:
    tables = _tables(policy_pb2.PolicyDocument())
    assert table_diff(tables, tables) == "no changes"


def test_table_diff_of_a_new_region_lists_it_whole() -> None:
    tables = _tables(policy_pb2.PolicyDocument())
    diff = table_diff({}, {"eu-west": tables["eu-west"]})
    assert f"@@ eu-west / {LLAMA} @@\n+policy: weighted" in diff


def test_policy_diff() -> None:
    old = parse_policy_document(EXAMPLE, CATALOG)
    new = set_field(old, "eu-west", LLAMA, CATALOG, latency_budget_ms=900)
    assert "-  latency_budget_ms: 800\n+  latency_budget_ms: 900" in policy_diff(old, new)
    assert policy_diff(old, old) == "no changes"
