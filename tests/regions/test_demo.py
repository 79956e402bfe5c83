"""`meridian demo`: its decisions over synthetic records (who served a phase, which backend to saturate, the
expectations), its report on a synthetic run, and one whole run with short phases on the two-region topology:
the report's files exist, its required expectations held and no process of the stack is left."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from demo.narration import length_lines, live_table
from demo.phases import (
    LONG_PROMPT_TOKENS,
    DemoSettings,
    Deployment,
    Phase,
    Verdict,
    length_split,
    long_prompts_moved,
    phase_figures,
    pick_backend_to_saturate,
    saturated_share_dropped,
    share_shift,
    spilled_over,
    traffic_moved,
)
from demo.report import DemoRun, write_report
from demo.run import policy_document, routers_acked, run_demo
from harness.timeline import RequestRecord
from meridian_common.workload import LONG_CONTEXT, WorkloadOverrides
from regions.stack_file import ProcessRecord
from regions.topology import DEFAULT_TOPOLOGY

TWO_REGIONS = DEFAULT_TOPOLOGY.parent / "topology-two-regions.yaml"
DEPLOYMENTS = {"us-dense": Deployment("us-dense", "dense", "us-east"),
               "us-linear": Deployment("us-linear", "linear-attention", "us-east"),
               "eu-moe": Deployment("eu-moe", "moe", "eu-west"),
               "eu-hybrid": Deployment("eu-hybrid", "hybrid", "eu-west")}


def _records(t0: float, t1: float, region: str, served: dict[str, int], latency_ms: float = 30.0,
             prompt_tokens: int | None = None) -> list[RequestRecord]:
    total = sum(served.values())
    step = (t1 - t0) / max(1, total)
    names = [name for name, count in served.items() for _ in range(count)]
    return [RequestRecord(t0 + i * step, t0 + i * step + latency_ms / 1000, "c", region, region, 200, latency_ms,
                          name, DEPLOYMENTS[name].region, prompt_tokens=prompt_tokens)
            for i, name in enumerate(names)]


def _long(served: dict[str, int], t0: float = 0.0) -> list[RequestRecord]:
    return _records(t0, t0 + 10, "us-east", served, prompt_tokens=22_000)


def _short(served: dict[str, int], t0: float = 0.0) -> list[RequestRecord]:
    return _records(t0, t0 + 10, "us-east", served, prompt_tokens=300)


def test_phase_figures_group_by_deployment_architecture_and_region() -> None:
    records = _records(0, 10, "us-east", {"us-linear": 6, "eu-moe": 4})
    figures = phase_figures(records, Phase("p", "", 0, 10), ["us-east"], DEPLOYMENTS)["us-east"]
    assert figures.by_deployment == {"us-linear": 0.6, "eu-moe": 0.4}
    assert figures.by_architecture == {"linear-attention": 0.6, "moe": 0.4}
    assert figures.by_region == {"us-east": 0.6, "eu-west": 0.4}
    assert figures.remote_share("us-east") == pytest.approx(0.4)
    assert figures.rate_per_s == 1.0 and figures.routers == ("us-east",)


def test_the_settled_part_of_a_phase_is_judged() -> None:
    records = _records(0, 3, "us-east", {"us-dense": 3}) + _records(3, 10, "us-east", {"us-linear": 7})
    figures = phase_figures(records, Phase("p", "", 0, 10), ["us-east"], DEPLOYMENTS, settle_fraction=0.3)
    assert figures["us-east"].by_deployment == {"us-linear": 1.0}


@pytest.mark.parametrize(("before", "after", "moved"), [
    ({"us-dense": 10}, {"us-linear": 10}, True),
    ({"us-dense": 10}, {"us-dense": 8, "us-linear": 2}, False),
    ({"us-dense": 5, "us-linear": 5}, {"us-dense": 5, "us-linear": 5}, False),
])
def test_traffic_moved(before: dict[str, int], after: dict[str, int], moved: bool) -> None:
    phase = Phase("p", "", 0, 10)
    verdict = traffic_moved(phase_figures(_records(0, 10, "us-east", before), phase, ["us-east"], DEPLOYMENTS),
                            phase_figures(_records(0, 10, "us-east", after), phase, ["us-east"], DEPLOYMENTS))
    assert verdict.passed is moved and verdict.required


def test_share_shift_is_total_variation() -> None:
    assert share_shift({"a": 1.0}, {"b": 1.0}) == 1.0
    assert share_shift({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0


@pytest.mark.parametrize(("before", "during", "passed"), [
    ({"us-linear": 8, "us-dense": 2}, {"us-linear": 1, "us-dense": 9}, True),
    ({"us-linear": 8, "us-dense": 2}, {"us-linear": 6, "us-dense": 4}, False),
    ({"us-dense": 10}, {"us-dense": 10}, False),  # nothing to drop: not a pass
])
def test_saturated_share_dropped(before: dict[str, int], during: dict[str, int], passed: bool) -> None:
    verdict = saturated_share_dropped("us-linear", _records(0, 10, "us-east", before),
                                      _records(10, 20, "us-east", during))
    assert verdict.passed is passed


def test_spill_over_is_a_note_not_a_requirement() -> None:
    phase = Phase("p", "", 0, 10)
    before = phase_figures(_records(0, 10, "us-east", {"us-linear": 10}), phase, ["us-east"], DEPLOYMENTS)
    during = phase_figures(_records(0, 10, "us-east", {"eu-moe": 7, "us-dense": 3}), phase, ["us-east"], DEPLOYMENTS)
    verdict = spilled_over(before, during)
    assert verdict.passed and not verdict.required and "us-east: remote 0% -> 70%" in verdict.detail
    assert not spilled_over(before, before).passed


def test_the_busiest_linear_attention_backend_is_saturated() -> None:
    records = _records(0, 10, "us-east", {"us-dense": 6, "us-linear": 4})
    assert pick_backend_to_saturate(records, DEPLOYMENTS, DEPLOYMENTS) == "us-linear"
    assert pick_backend_to_saturate(records, DEPLOYMENTS, ["us-dense", "eu-moe"]) == "us-dense"
    with pytest.raises(ValueError, match="no simulated backend"):
        pick_backend_to_saturate(records, DEPLOYMENTS, [])


def test_length_split_by_architecture() -> None:
    records = (_long({"us-linear": 6, "eu-hybrid": 2, "us-dense": 2}) + _short({"us-dense": 6, "us-linear": 2})
               + _records(0, 10, "us-east", {"eu-moe": 2}))  # no prompt size known: counted as shorter
    split = length_split(records, DEPLOYMENTS)
    assert (split.long_requests, split.short_requests) == (10, 10)
    assert split.long_by_architecture == {"linear-attention": 0.6, "dense": 0.2, "hybrid": 0.2}
    assert split.long_share() == pytest.approx(0.8) and split.short_share() == pytest.approx(0.2)
    assert split.short_by_architecture == {"dense": 0.6, "linear-attention": 0.2, "moe": 0.2}
    edge = _records(0, 1, "us-east", {"us-dense": 1}, prompt_tokens=LONG_PROMPT_TOKENS)
    assert length_split(edge, DEPLOYMENTS).long_requests == 1


@pytest.mark.parametrize(("baseline", "long", "short", "passed", "said"), [
    # Most long prompts to linear-attention and hybrid, well above the baseline's share: the phase worked.
    ({"us-dense": 8, "us-linear": 2}, {"us-linear": 15, "eu-hybrid": 3, "us-dense": 2}, {"us-dense": 10}, True,
     "90% of 20 prompts of 8k+ tokens"),
    # At least 60 % is required...
    ({"us-dense": 10}, {"us-linear": 5, "us-dense": 5}, {"us-dense": 10}, False, "at least 60% required"),
    # ...and 20 points above the baseline: a baseline already on them proves nothing.
    ({"us-linear": 7, "us-dense": 3}, {"us-linear": 16, "us-dense": 4}, {"us-dense": 10}, False,
     "at least 90% required"),
    ({"us-linear": 7, "us-dense": 3}, {"us-linear": 19, "us-dense": 1}, {"us-dense": 10}, True, "baseline 70%"),
    # Too few long prompts to judge.
    ({"us-dense": 10}, {"us-linear": 5}, {"us-dense": 10}, False, "only 5 prompts"),
])
def test_long_prompts_moved(baseline: dict[str, int], long: dict[str, int], short: dict[str, int], passed: bool,
                            said: str) -> None:
    verdict = long_prompts_moved(_short(baseline), _long(long, 20) + _short(short, 20), DEPLOYMENTS)
    assert verdict.passed is passed and verdict.required
    assert said in verdict.detail, verdict.detail


def test_long_prompts_are_narrated_by_architecture() -> None:
    records = _long({"us-linear": 3, "us-dense": 1}) + _short({"us-dense": 4})
    split = length_split(records, DEPLOYMENTS)
    lines = length_lines({"all": split}, LONG_PROMPT_TOKENS)
    assert "prompts of 8k+ tokens: 4, served by linear-attention 75%, dense 25% | shorter: 4, served by dense 100%" \
        in lines[1]
    figures = phase_figures(records, Phase("p", "", 0, 10), ["us-east"], DEPLOYMENTS)
    table = live_table(10, Phase("p", "label", 0, 10), 5, figures, DEPLOYMENTS, (), split)
    assert any("prompts of 8k+ tokens: 4" in line for line in table)
    quiet = live_table(10, Phase("p", "label", 0, 10), 5, figures, DEPLOYMENTS, (), length_split([], DEPLOYMENTS))
    assert not any("8k+" in line for line in quiet)


@pytest.mark.parametrize(("overrides", "answers", "streamed"), [
    (WorkloadOverrides(), 200, 0.5),
    (WorkloadOverrides(answer_tokens_median=50, stream_share=1.0), 50, 1.0),
    (WorkloadOverrides(prompt_tokens_median=40), 200, 0.5),  # the clients' prompts, not these
    (WorkloadOverrides(tiny=True, answer_tokens_median=20), 20, 0.5),
])
def test_long_context_workers_keep_long_prompts(tmp_path: Path, overrides: WorkloadOverrides, answers: int,
                                                streamed: float) -> None:
    workload = DemoSettings(TWO_REGIONS, tmp_path, workload=overrides).long_prompts()
    assert workload.prompt_tokens_median == LONG_CONTEXT.prompt_tokens_median >= 2 * LONG_PROMPT_TOKENS
    assert (workload.answer_tokens_median, workload.stream_share) == (answers, streamed)


def test_policy_document_and_acks() -> None:
    document = policy_document(["m"], ["us-east", "eu-west"], "cost-first", 200)
    assert "- {region: eu-west, model: m, policy: cost-first, latency_budget_ms: 200}" in document
    status = {"tables": [{"region": "us-east", "version": 12}, {"region": "eu-west", "version": 12}],
              "routers": [{"router_id": "us-east-1", "region": "us-east", "version": 12},
                          {"router_id": "eu-west-1", "region": "eu-west", "version": 9}]}
    ids = {"us-east-1": {}, "eu-west-1": {}}
    assert routers_acked(status, ids, policy_version=11) == {"us-east-1": 12}
    assert routers_acked(status, ids, policy_version=12) == {}


def test_settings_problems_name_their_field(tmp_path: Path) -> None:
    problems = DemoSettings(TWO_REGIONS, tmp_path, policy_s=0, long_context_s=-1, settle_fraction=1.0).problems()
    assert any(p.startswith("policy_s") for p in problems) and any("settle_fraction" in p for p in problems)
    assert any(p.startswith("long_context_s") for p in problems)


def test_report_of_a_synthetic_run(tmp_path: Path) -> None:
    phases = (Phase("baseline", "b", 0, 10), Phase("policy", "p", 10, 20))
    records = tuple(_records(0, 10, "us-east", {"us-dense": 20}) + _records(10, 20, "us-east", {"us-linear": 20}))
    figures = {p.name: phase_figures(records, p, ["us-east"], DEPLOYMENTS) for p in phases}
    lengths = {"long-context": {"all": length_split(_long({"us-linear": 4}) + _short({"us-dense": 6}), DEPLOYMENTS)}}
    run = DemoRun(DemoSettings(TWO_REGIONS, tmp_path), datetime.now(UTC), phases, ("us-east",), DEPLOYMENTS,
                  records, figures, Verdict(()), ((10.0, "policy_pushed", {"version": 3}),), (), None,
                  {"us-east": ["http://127.0.0.1:1"]}, (), lengths)
    directory = write_report(run, tmp_path / "report")
    for name in ("report.md", "report.json", "traffic_share.png", "latency.png"):
        assert (directory / name).stat().st_size > 0, name
    report = json.loads((directory / "report.json").read_text())
    assert report["figures"]["policy"]["us-east"]["by_deployment"] == {"us-linear": 1.0}
    markdown = (directory / "report.md").read_text()
    assert "| policy | us-east | 20 |" in markdown
    assert report["lengths"]["long-context"]["all"]["long_by_architecture"] == {"linear-attention": 1.0}
    assert "| long-context | all | 4 | linear-attention 100% | 6 | dense 100% |" in markdown


@pytest.mark.integration
def test_demo_runs_green_on_two_regions(tmp_path: Path) -> None:
    lines: list[str] = []
    settings = DemoSettings(TWO_REGIONS, tmp_path, baseline_s=7, long_context_s=7, policy_s=7, saturation_s=8,
                            recovery_s=5, table_every_s=3.5)
    code = run_demo(settings, lines.append)
    output = "\n".join(lines)
    assert code == 0, output
    reports = list((tmp_path / ".meridian" / "reports").glob("demo-*"))
    assert len(reports) == 1, output
    for name in ("report.md", "report.json", "traffic_share.png", "latency.png"):
        assert (reports[0] / name).stat().st_size > 0, name
    report = json.loads((reports[0] / "report.json").read_text())
    assert report["passed"] and all(e["passed"] for e in report["expectations"] if e["required"])
    assert report["saturated_backend"] == "eu-linear"
    assert [p["name"] for p in report["phases"]] == ["baseline", "long-context", "policy", "saturation", "recovery"]
    assert report["lengths"]["long-context"]["all"]["long_requests"] > 0
    assert "every router ACKed it" in output and "served by" in output
    # Torn down: the stack file is gone and so is every process it named.
    assert not (tmp_path / ".meridian" / "stack.json").exists()
    processes = [ProcessRecord.from_json(p) for p in report["processes"]]
    assert len(processes) >= 9 and not [p.name for p in processes if p.alive()]
