"""`meridian demo`: its decisions over synthetic records (who served a phase, which backend to saturate, the
expectations), its report on a synthetic run, and one whole run with short phases on the two-region topology:
the report's files exist, its required expectations held and no process of the stack is left."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from demo.phases import (
    DemoSettings,
    Deployment,
    Phase,
    Verdict,
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
from regions.stack_file import ProcessRecord
from regions.topology import DEFAULT_TOPOLOGY

TWO_REGIONS = DEFAULT_TOPOLOGY.parent / "topology-two-regions.yaml"
DEPLOYMENTS = {"us-dense": Deployment("us-dense", "dense", "us-east"),
               "us-linear": Deployment("us-linear", "linear-attention", "us-east"),
               "eu-moe": Deployment("eu-moe", "moe", "eu-west")}


def _records(t0: float, t1: float, region: str, served: dict[str, int], latency_ms: float = 30.0
             ) -> list[RequestRecord]:
    total = sum(served.values())
    step = (t1 - t0) / max(1, total)
    names = [name for name, count in served.items() for _ in range(count)]
    return [RequestRecord(t0 + i * step, t0 + i * step + latency_ms / 1000, "c", region, region, 200, latency_ms,
                          name, DEPLOYMENTS[name].region) for i, name in enumerate(names)]


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
    problems = DemoSettings(TWO_REGIONS, tmp_path, policy_s=0, settle_fraction=1.0).problems()
    assert any(p.startswith("policy_s") for p in problems) and any("settle_fraction" in p for p in problems)


def test_report_of_a_synthetic_run(tmp_path: Path) -> None:
    phases = (Phase("baseline", "b", 0, 10), Phase("policy", "p", 10, 20))
    records = tuple(_records(0, 10, "us-east", {"us-dense": 20}) + _records(10, 20, "us-east", {"us-linear": 20}))
    figures = {p.name: phase_figures(records, p, ["us-east"], DEPLOYMENTS) for p in phases}
    run = DemoRun(DemoSettings(TWO_REGIONS, tmp_path), datetime.now(UTC), phases, ("us-east",), DEPLOYMENTS,
                  records, figures, Verdict(()), ((10.0, "policy_pushed", {"version": 3}),), (), None,
                  {"us-east": ["http://127.0.0.1:1"]})
    directory = write_report(run, tmp_path / "report")
    for name in ("report.md", "report.json", "traffic_share.png", "latency.png"):
        assert (directory / name).stat().st_size > 0, name
    report = json.loads((directory / "report.json").read_text())
    assert report["figures"]["policy"]["us-east"]["by_deployment"] == {"us-linear": 1.0}
    assert "| policy | us-east | 20 |" in (directory / "report.md").read_text()


@pytest.mark.integration
def test_demo_runs_green_on_two_regions(tmp_path: Path) -> None:
    lines: list[str] = []
    settings = DemoSettings(TWO_REGIONS, tmp_path, baseline_s=7, policy_s=7, saturation_s=8, recovery_s=5,
                            table_every_s=3.5)
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
    assert [p["name"] for p in report["phases"]] == ["baseline", "policy", "saturation", "recovery"]
    assert "every router ACKed it" in output and "served by" in output
    # Torn down: the stack file is gone and so is every process it named.
    assert not (tmp_path / ".meridian" / "stack.json").exists()
    processes = [ProcessRecord.from_json(p) for p in report["processes"]]
    assert len(processes) >= 9 and not [p.name for p in processes if p.alive()]
