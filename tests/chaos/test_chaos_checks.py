"""The chaos checks are pure functions of a Timeline: each is driven here over synthetic timelines, once where
it must pass and once where it must fail, with no stack at all. Also the probe parsing, the registry, the
report writer and the restore bookkeeping of StackHandle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos import checks
from chaos.report import report_markdown, write_report
from chaos.scenario import CheckResult, RunSettings, ScenarioResult
from chaos.scenarios import SCENARIOS, get_scenario
from harness.probes import replica_probe_from, router_probe_from
from harness.stack_handle import StackHandle
from harness.timeline import (
    Event,
    Phases,
    ReplicaProbe,
    RequestRecord,
    RouterProbe,
    Timeline,
    bins,
    percentile,
    phases_figures,
)

PHASES = Phases(fault_start_s=3.0, fault_end_s=7.0, end_s=10.0)


def req(t: float, *, backend: str = "a", status: int = 200, latency_ms: float = 10.0, client_region: str = "us",
        router_region: str = "us", backend_region: str = "us", ttft_ms: float | None = None) -> RequestRecord:
    return RequestRecord(t, t + latency_ms / 1000, "c", client_region, router_region, status, latency_ms, backend,
                         backend_region, streamed=ttft_ms is not None, ttft_ms=ttft_ms)


def steady(*, backend: str = "a", step_s: float = 0.1, **kwargs: Any) -> list[RequestRecord]:
    return [req(i * step_s, backend=backend, **kwargs) for i in range(int(PHASES.end_s / step_s))]


def timeline(requests: list[RequestRecord] | None = None, *, routers: list[RouterProbe] | None = None,
             replicas: list[ReplicaProbe] | None = None, events: list[Event] | None = None,
             facts: dict[str, Any] | None = None) -> Timeline:
    return Timeline("test", PHASES, tuple(requests or []), tuple(routers or []), tuple(replicas or []),
                    tuple(events or []), facts or {}, wall_start_unix_ms=1_000_000)


def router_probes(**by_time: Any) -> list[RouterProbe]:
    return [RouterProbe(i * 0.5, "r1", "us", True, **by_time) for i in range(21)]


# --- figures ----------------------------------------------------------------------------------------------------

def test_percentile_and_phase_figures() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([float(v) for v in range(1, 101)], 95) == 95.0
    figures = phases_figures(timeline(steady()))
    assert figures["baseline"].requests == 30 and figures["fault"].requests == 40
    assert figures["fault"].share == {"a": 1.0}
    assert sum(b.requests for b in bins(timeline(steady()), 0.5)) == 100


# --- requests ---------------------------------------------------------------------------------------------------

def test_zero_client_errors() -> None:
    assert checks.zero_client_errors()(timeline(steady())).passed
    failing = steady() + [req(4.0, status=503)]
    result = checks.zero_client_errors()(timeline(failing))
    assert not result.passed and "1 of 101" in result.detail and "503 via us" in result.detail
    assert not checks.zero_client_errors()(timeline([])).passed


def _cut_stream(start_s: float, end_s: float, *, backend_region: str = "eu",
                ttft_ms: float | None = 100.0) -> RequestRecord:
    return RequestRecord(start_s, end_s, "c", "us", "us", 200, (end_s - start_s) * 1000, "a", backend_region,
                         error="error event in the stream: the backend stream broke", streamed=True, ttft_ms=ttft_ms)


def test_a_partition_excuses_only_the_streams_it_cut_mid_answer() -> None:
    facts = {"region": "eu"}
    answering = _cut_stream(2.0, 3.2)  # answering from the partitioned region when the fault began at 3 s
    elsewhere = _cut_stream(2.0, 3.2, backend_region="us")  # a region the fault did not cut
    no_first_token = _cut_stream(2.9, 3.4, ttft_ms=None)
    before = _cut_stream(1.0, 2.0)  # broke before the fault: not its doing
    excusing = checks.zero_client_errors(excuse_streams_cut_at_the_fault=True)
    result = excusing(timeline(steady() + [answering], facts=facts))
    assert result.passed and "1 streams already answering when the fault cut them" in result.detail
    for other in (elsewhere, no_first_token, before):
        assert not excusing(timeline(steady() + [answering, other], facts=facts)).passed
    assert not checks.zero_client_errors()(timeline(steady() + [answering], facts=facts)).passed


def _stream(start_s: float, **fields: object) -> RequestRecord:
    values: dict[str, object] = {"streamed": True, "ttft_ms": 50.0, "requested_tokens": 200, "output_tokens": 200,
                                 "finish_reasons": 1}
    values.update(fields)
    return RequestRecord(start_s, start_s + 0.5, "c", "us", "us", 200, 500.0, "a", "us", **values)  # type: ignore[arg-type]


def test_streams_complete() -> None:
    whole = [_stream(1.0), _stream(4.0, resumes=1), _stream(5.0, requested_tokens=None, output_tokens=37)]
    result = checks.streams_complete()(timeline(steady() + whole))
    assert result.passed and "3 of 3 streams whole (1 resumed after a cut)" in result.detail
    for broken, says in ((_stream(4.5, error="stream cut before data: [DONE]"), "cut"),
                         (_stream(4.5, finish_reasons=2), "2 finish reasons"),
                         (_stream(4.5, output_tokens=120), "120 of 200 tokens")):
        result = checks.streams_complete()(timeline(steady() + whole + [broken]))
        assert not result.passed and says in result.detail
    assert not checks.streams_complete()(timeline(steady())).passed  # no stream at all proves nothing


def test_streams_resumed_during_fault() -> None:
    resumed_in_fault = _stream(PHASES.fault_start_s + 0.5, resumes=1)
    assert checks.streams_resumed_during_fault()(timeline(steady() + [resumed_in_fault])).passed
    under_way_at_the_fault = _stream(PHASES.fault_start_s - 0.2, resumes=1)  # 0.5 s long: cut by it
    assert checks.streams_resumed_during_fault()(timeline(steady() + [under_way_at_the_fault])).passed
    resumed_before = _stream(PHASES.fault_start_s - 1.0, resumes=1)
    result = checks.streams_resumed_during_fault()(timeline(steady() + [resumed_before, _stream(4.0)]))
    assert not result.passed and "0 of" in result.detail


def test_routing_continues() -> None:
    assert checks.routing_continues()(timeline(steady())).passed
    stalled = [r for r in steady() if not PHASES.fault_start_s <= r.start_s < PHASES.fault_end_s]
    assert not checks.routing_continues()(timeline(stalled)).passed


@pytest.mark.parametrize(("fault_ttft_ms", "passed"), [(12.0, True), (400.0, False)])
def test_ttft_unchanged(fault_ttft_ms: float, passed: bool) -> None:
    # Answers of every length: whole-answer times vary by seconds, the first token does not.
    records = [req(r.start_s, latency_ms=100.0 + (i % 7) * 900, ttft_ms=fault_ttft_ms if 3 <= r.start_s < 7 else 10.0)
               for i, r in enumerate(steady())]
    assert checks.ttft_unchanged(50, 150)(timeline(records)).passed is passed
    assert not checks.ttft_unchanged(50, 150)(timeline(steady())).passed  # no stream at all: nothing to judge


def test_traffic_moves_away_is_judged_per_router_region() -> None:
    facts = {"backend": "a", "settle_s": 1.0}
    moved = [req(r.start_s, backend="b" if r.start_s >= 3.5 else "a") for r in steady()]
    assert checks.traffic_moves_away()(timeline(moved, facts=facts)).passed
    # eu moved away, us stayed: a busy eu must not hide it.
    eu = [req(i * 0.02, backend="b" if i * 0.02 >= 3.5 else "a", router_region="eu") for i in range(500)]
    us_stuck = steady(backend="a")
    result = checks.traffic_moves_away()(timeline(eu + us_stuck, facts=facts))
    assert not result.passed and "us routers 100% -> 100%" in result.detail
    assert not checks.traffic_moves_away()(timeline(steady(backend="b"), facts=facts)).passed


def test_traffic_moves_away_may_judge_streams_only() -> None:
    # Streams left the backend; long whole answers stayed on it, as they should where it decodes faster.
    facts = {"backend": "a", "settle_s": 1.0}
    streams = [req(r.start_s, backend="b" if r.start_s >= 3.5 else "a", ttft_ms=20.0) for r in steady()]
    whole = [req(r.start_s + offset, backend="a", latency_ms=700.0) for r in steady() for offset in (0.03, 0.06)]
    assert not checks.traffic_moves_away()(timeline(streams + whole, facts=facts)).passed
    result = checks.traffic_moves_away(streams_only=True)(timeline(streams + whole, facts=facts))
    assert result.passed and "us routers 100% -> 0%" in result.detail and "share of streams" in result.detail
    stuck = [req(r.start_s, backend="a", ttft_ms=620.0) for r in steady()]
    assert not checks.traffic_moves_away(streams_only=True)(timeline(stuck + whole, facts=facts)).passed


def test_ttft_p95_within_budget_only_where_another_deployment_meets_it() -> None:
    facts = {"backend": "a", "budget_ms": 300.0, "settle_s": 1.0, "deployment_regions": {"a": "us", "b": "us"},
             "rtt_ms": {"us": {"us": 0.0}}}
    baseline = [req(i * 0.1, backend="a" if i % 2 else "b", ttft_ms=40.0) for i in range(30)]
    # Long answers take seconds in all: only the time to first token is judged against the budget.
    good = [req(3 + i * 0.1, backend="b", latency_ms=4000, ttft_ms=50.0) for i in range(70)]
    assert checks.ttft_p95_within_budget()(timeline(baseline + good, facts=facts)).passed
    slow = [req(3 + i * 0.1, backend="a", latency_ms=4000, ttft_ms=650.0) for i in range(70)]
    assert not checks.ttft_p95_within_budget()(timeline(baseline + slow, facts=facts)).passed
    # No other deployment served before: nothing can meet the budget, so it is not judged.
    only_a = [req(i * 0.1, ttft_ms=40.0) for i in range(30)]
    result = checks.ttft_p95_within_budget()(timeline(only_a + slow, facts=facts))
    assert result.passed and "not judged" in result.detail


def test_served_by_other_regions() -> None:
    facts = {"region": "eu", "settle_s": 0.5}
    served = [req(3 + i * 0.1, client_region="eu", router_region="eu", backend="us-a", backend_region="us")
              for i in range(40)]
    assert checks.served_by_other_regions()(timeline(served, facts=facts)).passed
    local = [req(4.0, client_region="eu", router_region="eu", backend="eu-a", backend_region="eu")]
    assert not checks.served_by_other_regions()(timeline(served + local, facts=facts)).passed
    assert not checks.served_by_other_regions()(timeline([], facts=facts)).passed


# --- telemetry ----------------------------------------------------------------------------------------------------

def _telemetry_probes(resume_after_s: float | None) -> list[RouterProbe]:
    probes = []
    for i in range(21):
        t = i * 0.5
        down = PHASES.fault_start_s <= t < PHASES.fault_end_s + (resume_after_s or 99)
        flush_t = t if not down else min(t, PHASES.fault_start_s)
        probes.append(RouterProbe(t, "r1", "us", True, telemetry_connected=not down, dropped_samples=0,
                                  buffered_batches=4 if down else 0,
                                  last_flush_unix_ms=int(1_000_000 + flush_t * 1000)))
    return probes


def test_telemetry_checks() -> None:
    quick = timeline(routers=_telemetry_probes(0.5))
    assert checks.telemetry_disconnected_during_fault()(quick).passed
    assert checks.telemetry_resumes_within(2.0)(quick).passed
    assert not checks.telemetry_resumes_within(2.0)(timeline(routers=_telemetry_probes(2.6))).passed
    assert not checks.telemetry_resumes_within(2.0)(timeline(routers=_telemetry_probes(None))).passed
    never_cut = timeline(routers=router_probes(telemetry_connected=True))
    assert not checks.telemetry_disconnected_during_fault()(never_cut).passed
    assert checks.dropped_samples_reported()(quick).passed
    assert not checks.dropped_samples_reported()(timeline(routers=router_probes())).passed


# --- breakers -------------------------------------------------------------------------------------------------------

def _breaker_probes(open_from: float, open_until: float) -> list[RouterProbe]:
    return [RouterProbe(i * 0.5, "r1", "us", True,
                        breakers=(("a", "open" if open_from <= i * 0.5 < open_until else "closed"),),
                        healthy=(("a", True),)) for i in range(21)]


def test_breaker_opens() -> None:
    facts = {"backend": "a", "settle_s": 1.0}
    assert checks.breaker_opens()(timeline(routers=_breaker_probes(4.0, 8.0), facts=facts)).passed
    never = _breaker_probes(99, 99)
    assert not checks.breaker_opens()(timeline(routers=never, facts=facts)).passed
    # Traffic left before the breaker had to open: that passes only where allowed, and says so.
    left = [req(r.start_s, backend="b" if r.start_s >= 3.2 else "a") for r in steady()]
    either = checks.breaker_opens(or_traffic_left_first=True)
    result = either(timeline(left, routers=never, facts=facts))
    assert result.passed and "no request started on it" in result.detail
    assert not checks.breaker_opens()(timeline(left, routers=never, facts=facts)).passed
    stayed = [req(r.start_s, backend="a") for r in steady()]
    assert not either(timeline(stayed, routers=never, facts=facts)).passed


LONG = Phases(fault_start_s=3.0, fault_end_s=7.0, end_s=19.0)


def _share_run(back_after_s: float | None, share_after: float = 0.5) -> Timeline:
    """a serves half the requests before the fault, none during it, and `share_after` of them from
    `back_after_s` after the recovery (never when None)."""
    records = []
    for i in range(int(LONG.end_s / 0.1)):
        t = i * 0.1
        if t < LONG.fault_start_s:
            backend = "a" if i % 2 else "b"
        elif t < LONG.fault_end_s or back_after_s is None or t < LONG.fault_end_s + back_after_s:
            backend = "b"
        else:
            backend = "a" if (i % 10) < share_after * 10 else "b"
        records.append(req(t, backend=backend))
    return Timeline("test", LONG, tuple(records), facts={"backend": "a"})


@pytest.mark.parametrize(
    ("back_after_s", "share_after", "passes"),
    [(1.0, 0.5, True), (6.5, 0.3, True), (8.5, 0.5, False), (None, 0.5, False), (2.0, 0.2, False)],
)
def test_share_back_after_recovery_measures_traffic(back_after_s: float | None, share_after: float,
                                                    passes: bool) -> None:
    """A backend merely re-admitted is not enough: it must serve half its former share within 10 s."""
    result = checks.share_back_after_recovery()(_share_run(back_after_s, share_after))
    assert result.passed == passes, result.detail
    assert "us routers 50% before" in result.detail


def test_share_back_needs_a_long_enough_recovery() -> None:
    short = Timeline("test", PHASES, tuple(steady()), facts={"backend": "a"})
    result = checks.share_back_after_recovery()(short)
    assert not result.passed and "too short to judge" in result.detail


# --- control plane ---------------------------------------------------------------------------------------------------

def test_versions_never_go_backwards() -> None:
    rising = [RouterProbe(i * 0.5, "r1", "us", True, table_version=10 + i // 4) for i in range(21)]
    assert checks.versions_never_go_backwards()(timeline(routers=rising)).passed
    back = rising + [RouterProbe(10.5, "r1", "us", True, table_version=3)]
    result = checks.versions_never_go_backwards()(timeline(routers=back))
    assert not result.passed and "v15 -> v3" in result.detail


def _roles(leader_after_kill_s: float | None) -> list[ReplicaProbe]:
    probes = []
    for i in range(41):
        t = i * 0.25
        probes.append(ReplicaProbe(t, "cp-1", t < 3.0, "leader" if t < 3.0 else None, t < 3.0))
        elected = leader_after_kill_s is not None and t >= 3.0 + leader_after_kill_s
        probes.append(ReplicaProbe(t, "cp-2", True, "leader" if elected else "follower", elected))
    return probes


@pytest.mark.parametrize(("after_s", "passed"), [(3.2, True), (4.5, False), (None, False)])
def test_new_leader_within_lease(after_s: float | None, passed: bool) -> None:
    kill = Event(3.0, "replica_killed", {"replica": "cp-1", "pid": 42})
    result = checks.new_leader_within_lease()(timeline(replicas=_roles(after_s), events=[kill],
                                                       facts={"lease_ttl_s": 3.0}))
    assert result.passed is passed, result.detail
    assert not checks.new_leader_within_lease()(timeline(facts={"lease_ttl_s": 3.0})).passed


def test_no_publication_without_leadership() -> None:
    facts = {"lease_ttl_s": 2.0}
    held = router_probes(table_version=7)
    quiet = [ReplicaProbe(i * 0.25, "cp-1", True, "leader" if i * 0.25 < 4 else "no-quorum", i * 0.25 < 4)
             for i in range(41)]
    assert checks.no_publication_without_leadership()(timeline(routers=held, replicas=quiet, facts=facts)).passed
    leaked = held + [RouterProbe(5.0, "r1", "us", True, table_version=8)]
    assert not checks.no_publication_without_leadership()(timeline(routers=leaked, replicas=quiet,
                                                                   facts=facts)).passed
    loud = [ReplicaProbe(i * 0.25, "cp-1", True, "leader", True) for i in range(41)]
    assert not checks.no_publication_without_leadership()(timeline(routers=held, replicas=loud, facts=facts)).passed
    short = Timeline("t", Phases(3.0, 6.0, 9.0), (), tuple(held), tuple(quiet), (), facts)
    result = checks.no_publication_without_leadership()(short)
    assert not result.passed and "too short" in result.detail


def test_publishing_resumes() -> None:
    resumed = [ReplicaProbe(8.0, "cp-2", True, "leader", True)]
    assert checks.publishing_resumes()(timeline(replicas=resumed)).passed
    assert not checks.publishing_resumes()(timeline(replicas=[ReplicaProbe(8.0, "cp-2", True, "leader", False)])).passed


def test_routers_keep_last_table_and_resync() -> None:
    probes = [RouterProbe(i * 0.5, "r1", "us", True, table_version=5,
                          control_plane_link="unreachable" if 3 <= i * 0.5 < 8 else "connected")
              for i in range(21)]
    assert checks.routers_keep_last_table()(timeline(routers=probes)).passed
    assert checks.routers_resync()(timeline(routers=probes)).passed
    changed = [RouterProbe(p.t_s, p.router_id, p.region, True, table_version=6 if 4 <= p.t_s < 7 else 5,
                           control_plane_link=p.control_plane_link) for p in probes]
    assert not checks.routers_keep_last_table()(timeline(routers=changed)).passed
    never_cut = router_probes(table_version=5, control_plane_link="connected")
    assert not checks.routers_keep_last_table()(timeline(routers=never_cut)).passed
    behind = probes + [RouterProbe(9.0, "r2", "us", True, table_version=9, control_plane_link="connected")]
    assert not checks.routers_resync()(timeline(routers=behind)).passed


# --- probes, registry, report, restore ------------------------------------------------------------------------------

def test_probe_parsing() -> None:
    body = {"table": {"version": 5, "epoch": 2, "source": "control-plane"},
            "telemetry": {"connected": True, "dropped_samples": 3, "buffered_batches": 0, "last_flush_unix_ms": 9},
            "control_plane": {"link": "connected"},
            "models": {"m": {"deployments": [{"name": "a", "breaker": "open", "healthy": False}]}}}
    probe = router_probe_from(1.0, "r1", "us", body)
    assert probe.table_version == 5 and probe.breaker("a") == "open" and probe.dropped_samples == 3
    assert dict(probe.healthy) == {"a": False} and probe.control_plane_link == "connected"
    assert not router_probe_from(1.0, "r1", "us", None).reachable
    replica = replica_probe_from(1.0, "cp-1", {"role": "leader", "publishing": True, "pid": 4})
    assert replica.role == "leader" and replica.publishing and not replica_probe_from(1.0, "cp-1", "x").reachable


def test_registry() -> None:
    assert list(SCENARIOS) == ["redis-loss", "redis-latency", "backend-saturation", "backend-latency",
                               "backend-errors", "stream-cut", "leader-kill", "etcd-loss",
                               "control-plane-partition", "region-partition", "etcd-member-loss", "redis-failover"]
    assert all(s.checks and s.description and s.injects for s in SCENARIOS.values())
    with pytest.raises(KeyError, match="unknown scenario 'nope'"):
        get_scenario("nope")


def test_report_files(tmp_path: Path) -> None:
    scenario = SCENARIOS["redis-latency"]
    tl = timeline(steady(), routers=router_probes(table_version=1), events=[Event(3.0, "toxic_added", {"x": 1})])
    result = ScenarioResult(scenario, (CheckResult("zero client errors", True, "0 of 100 requests failed"),), tl,
                            settings=RunSettings())
    directory = write_report(result, tmp_path / "r")
    assert {p.name for p in directory.iterdir()} == {"report.md", "report.json", "timeline.png"}
    markdown = report_markdown(result)
    assert "PASSED" in markdown and "| PASS | zero client errors |" in markdown and "toxic_added" in markdown


def test_restore_undoes_newest_first_and_reports_failures() -> None:
    handle = StackHandle({"router_ids": {}, "control_plane": {"replicas": {}}}, clock=lambda: 0.0)
    done: list[str] = []
    handle._on_undo("first", lambda: done.append("first"))

    def broken() -> None:
        raise RuntimeError("toxiproxy gone")

    handle._on_undo("broken", broken)
    handle._on_undo("last", lambda: done.append("last"))
    failures = handle.restore()
    assert done == ["last", "first"] and failures == ["broken: toxiproxy gone"]
    assert handle.restore() == []  # nothing twice


def _leaders(gap: tuple[float, float] | None, *, new_leader: str = "cp-1") -> list[ReplicaProbe]:
    """cp-1 leads, except during `gap` (nobody leads); after the gap `new_leader` leads."""
    probes = []
    for i in range(41):
        t = i * 0.25
        if gap is not None and gap[0] <= t < gap[1]:
            probes += [ReplicaProbe(t, "cp-1", True, "no-quorum"), ReplicaProbe(t, "cp-2", True, "follower")]
        else:
            leader = new_leader if gap is not None and t >= gap[1] else "cp-1"
            probes += [ReplicaProbe(t, r, True, "leader" if r == leader else "follower") for r in ("cp-1", "cp-2")]
    return probes


@pytest.mark.parametrize(
    ("gap", "new_leader", "passed"),
    [(None, "cp-1", True), ((3.5, 6.0), "cp-2", True), ((3.5, 7.75), "cp-2", False), ((3.25, 8.0), "cp-1", False)],
)
def test_leadership_holds(gap: tuple[float, float] | None, new_leader: str, passed: bool) -> None:
    kill = Event(3.0, "etcd_member_killed", {"member": "etcd-1", "pid": 42})
    check = checks.leadership_holds("etcd_member_killed")
    result = check(timeline(replicas=_leaders(gap, new_leader=new_leader), events=[kill], facts={"lease_ttl_s": 3.0}))
    assert result.passed is passed, result.detail
    assert not check(timeline(replicas=_leaders(None), facts={"lease_ttl_s": 3.0})).passed


@pytest.mark.parametrize(("arrives_at", "passed"), [(4.5, True), (5.25, False), (None, False)])
def test_policy_pushes_reach_routers(arrives_at: float | None, passed: bool) -> None:
    push = Event(3.2, "policy_pushed", {"region": "us", "model": "m", "latency_budget_ms": 4001, "sent_s": 3.0,
                                        "attempts": 1})
    probes = [RouterProbe(i * 0.25, rid, "us", True,
                          latency_budgets_ms=(("m", 4001 if arrives_at is not None and i * 0.25 >= arrives_at
                                               else None),))
              for i in range(41) for rid in ("r1", "r2")]
    check = checks.policy_pushes_reach_routers(2.0)
    assert check(timeline(routers=probes, events=[push])).passed is passed
    assert not check(timeline(routers=probes)).passed


def test_probe_reads_the_latency_budget_of_every_model() -> None:
    probe = router_probe_from(1.0, "r1", "us", {"models": {"m": {"latency_budget_ms": 900, "deployments": []},
                                                           "n": {"deployments": []}}})
    assert probe.latency_budget_ms("m") == 900 and probe.latency_budget_ms("n") is None


KILL = Event(3.0, "redis_server_killed", {"server": "redis-1", "pid": 42})


@pytest.mark.parametrize(("what", "field"), [("telemetry", "last_flush_unix_ms"),
                                             ("rate limits", "limits_synced_unix_ms")])
@pytest.mark.parametrize(("back_at_s", "passed"), [(5.5, True), (8.5, False), (None, False)])
def test_redis_writes_resume_within(what: str, field: str, back_at_s: float | None, passed: bool) -> None:
    def written(t: float) -> int:
        # Each probe shows the last write: before the kill, then frozen, then again from back_at_s.
        last = min(t, 2.9) if back_at_s is None or t < back_at_s else t
        return int(1_000_000 + last * 1000)

    probes = [RouterProbe(i * 0.25, "r1", "us", True, **{field: written(i * 0.25)}) for i in range(41)]
    check = checks.redis_writes_resume_within(what, 5.0, "redis_server_killed")
    assert check(timeline(routers=probes, events=[KILL])).passed is passed
    assert not check(timeline(routers=probes)).passed


def _submits(accepted_at: list[float], refused_at: list[float]) -> list[Event]:
    return sorted([Event(t, "job_submitted", {"accepted": True, "job": f"job-{t}"}) for t in accepted_at]
                  + [Event(t, "job_submitted", {"accepted": False, "error": "503"}) for t in refused_at],
                  key=lambda e: e.t_s)


@pytest.mark.parametrize(("accepted_at", "passed"), [([1.0, 5.5], True), ([1.0, 8.5], False), ([1.0], False)])
def test_jobs_accepted_again_within(accepted_at: list[float], passed: bool) -> None:
    events = [KILL, *_submits(accepted_at, [3.5, 4.0])]
    assert checks.jobs_accepted_again_within(5.0, "redis_server_killed")(timeline(events=events)).passed is passed


@pytest.mark.parametrize(("outcomes", "passed"), [(("succeeded", "succeeded"), True), (("succeeded", "missing"), False),
                                                  (("succeeded", None), False), (("failed", "succeeded"), False)])
def test_no_job_lost(outcomes: tuple[str | None, ...], passed: bool) -> None:
    events = _submits([1.0, 4.0], [3.5])
    events += [Event(9.0, "job_outcome", {"job": f"job-{t}", "status": status})
               for t, status in zip((1.0, 4.0), outcomes, strict=True) if status is not None]
    result = checks.no_job_lost()(timeline(events=events))
    assert result.passed is passed, result.detail
    assert not checks.no_job_lost()(timeline(events=_submits([], [3.5]))).passed


def test_scenarios_say_what_stack_they_need() -> None:
    default = {"etcd": {"members": [{"name": "etcd"}]}, "redis": {"url": "redis://127.0.0.1:1/0"}}
    replicated = {"etcd": {"members": [{"name": f"etcd-{i}"} for i in (1, 2, 3)]},
                  "redis": {"url": "redis+sentinel://127.0.0.1:1/meridian", "sentinels": [{"name": "sentinel-1"}]}}
    assert SCENARIOS["redis-loss"].unmet_needs(default) is None
    assert "without --redis-sentinel" in str(SCENARIOS["redis-loss"].unmet_needs(replicated))
    assert "--etcd-members 3" in str(SCENARIOS["etcd-member-loss"].unmet_needs(default))
    assert SCENARIOS["redis-failover"].unmet_needs(replicated) is None


def test_a_push_replaced_before_it_was_published_counts_as_reached_by_the_next() -> None:
    pushes = [Event(3.2 + i, "policy_pushed", {"region": "us", "model": "m", "latency_budget_ms": budget,
                                               "sent_s": 3.0 + i, "attempts": 1}) for i, budget in enumerate((1, 2))]
    probes = [RouterProbe(i * 0.25, "r1", "us", True, latency_budgets_ms=(("m", 2 if i * 0.25 >= 4.5 else None),))
              for i in range(41)]
    check = checks.policy_pushes_reach_routers(2.0)
    assert check(timeline(routers=probes, events=pushes)).passed
    stalled = [RouterProbe(p.t_s, "r1", "us", True, latency_budgets_ms=(("m", 2 if p.t_s >= 5.5 else None),))
               for p in probes]
    assert not check(timeline(routers=stalled, events=pushes)).passed  # the first push waited 2.5 s
