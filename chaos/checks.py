"""The checks scenarios are made of: pure functions of a Timeline returning (name, passed, detail). Each
builder takes the check's settings and returns the check; what a fault chose (its target backend, the lease
TTL...) is read from `timeline.facts`."""

from __future__ import annotations

from collections.abc import Sequence

from chaos.verdict import Check, CheckResult
from harness.timeline import (
    RequestRecord,
    RouterProbe,
    Timeline,
    error_count,
    percentile,
    share_by_backend,
    share_recovery,
    ttfts_ms,
)


def _fmt_errors(records: Sequence[RequestRecord]) -> str:
    failed = [r for r in records if not r.ok]
    kinds: dict[str, int] = {}
    for r in failed:
        key = f"{r.status or 'no answer'} via {r.router_region}"
        kinds[key] = kinds.get(key, 0) + 1
    first = next((r for r in failed), None)
    sample = f"; first at t={first.start_s:.2f}s: {(first.error or '')[:120]}" if first else ""
    return ", ".join(f"{n}× {k}" for k, n in sorted(kinds.items())) + sample


def cut_at_the_fault(record: RequestRecord, fault_start_s: float, cut_region: str | None) -> bool:
    """A stream already answering from the region whose links the fault cut that no router could finish
    elsewhere (a router continues a cut stream on another deployment when one can take it), so it ended with an
    error event, never a clean truncated end. (A backend behind a cut link sends no first token: one that did
    was connected before the cut reached it.)"""
    return (record.streamed and record.ttft_ms is not None and not record.ok and record.end_s >= fault_start_s
            and record.backend_region is not None and record.backend_region == cut_region)


def zero_client_errors(*, excuse_streams_cut_at_the_fault: bool = False) -> Check:
    """No request failed. A fault that cuts connections (a partition) may excuse the streams it cut mid-answer,
    which are then counted and named in the detail rather than hidden."""
    def check(timeline: Timeline) -> CheckResult:
        records = timeline.requests
        if not records:
            return CheckResult("zero client errors", False, "no request was recorded")
        region = timeline.facts.get("region")
        cut = [r for r in records if excuse_streams_cut_at_the_fault
               and cut_at_the_fault(r, timeline.phases.fault_start_s, str(region) if region else None)]
        counted = [r for r in records if r not in cut]
        errors = error_count(counted)
        detail = f"{errors} of {len(records)} requests failed" + (f" ({_fmt_errors(counted)})" if errors else "")
        if cut:
            detail += (f"; {len(cut)} streams already answering when the fault cut them ended with an error event "
                       "(excused: no router could finish them elsewhere)")
        return CheckResult("zero client errors", errors == 0, detail)
    return check


def streams_complete() -> Check:
    """Every stream that was answered is whole: `[DONE]` and no error event (`ok`), exactly one finish reason,
    and the tokens it asked for when it set max_tokens (as its usage reported them, else its content chunks)."""
    def check(timeline: Timeline) -> CheckResult:
        streams = [r for r in timeline.requests if r.streamed and r.status == 200]
        if not streams:
            return CheckResult("every stream complete", False, "no stream was answered")
        problems = []
        for r in streams:
            if not r.ok:
                problems.append(f"t={r.start_s:.2f}s cut: {(r.error or '')[:100]}")
            elif r.finish_reasons != 1:
                problems.append(f"t={r.start_s:.2f}s {r.finish_reasons} finish reasons")
            elif r.requested_tokens is not None and r.output_tokens != r.requested_tokens:
                problems.append(f"t={r.start_s:.2f}s {r.output_tokens} of {r.requested_tokens} tokens")
        resumed = sum(1 for r in streams if r.resumes)
        detail = (f"{len(streams) - len(problems)} of {len(streams)} streams whole ({resumed} resumed after a cut)"
                  + (f"; {len(problems)} not: {'; '.join(problems[:3])}" if problems else ""))
        return CheckResult("every stream complete", not problems, detail)
    return check


def streams_resumed_during_fault(minimum: int = 1) -> Check:
    """Proves the fault cut streams under way and routers finished them elsewhere: at least `minimum` streams
    in flight during the fault window carried a `: meridian resumed` comment."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        fault = [r for r in timeline.requests if r.streamed and r.start_s < p.fault_end_s and r.end_s > p.fault_start_s]
        resumed = [r for r in fault if r.resumes]
        backends = sorted({str(r.backend) for r in resumed})
        return CheckResult(f"streams cut in the fault were resumed (at least {minimum})", len(resumed) >= minimum,
                           f"{len(resumed)} of {len(fault)} streams in flight during the fault were resumed"
                           + (f" (first served by {', '.join(backends)})" if backends else ""))
    return check


def routing_continues(min_rate_ratio: float = 0.5) -> Check:
    """Requests kept being served during the fault, at no less than `min_rate_ratio` of the baseline rate."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        base = [r for r in timeline.baseline if r.ok]
        fault = [r for r in timeline.during_fault if r.ok]
        base_rate = len(base) / p.fault_start_s if p.fault_start_s else 0.0
        fault_rate = len(fault) / (p.fault_end_s - p.fault_start_s) if p.fault_end_s > p.fault_start_s else 0.0
        passed = bool(fault) and fault_rate >= min_rate_ratio * base_rate
        return CheckResult("routing continues during the fault", passed,
                           f"{fault_rate:.1f} served/s during the fault vs {base_rate:.1f}/s before "
                           f"(at least {min_rate_ratio:.0%} required)")
    return check


def ttft_unchanged(max_added_p50_ms: float, max_added_p95_ms: float) -> Check:
    """The fault added no more than these to the p50 and p95 of the clients' time to first token (far below the
    latency injected). The first token is what a stall on the request path delays; a whole answer's time mostly
    says how long the answer was."""
    def check(timeline: Timeline) -> CheckResult:
        name = "time to first token unchanged"
        base, fault = ttfts_ms(timeline.baseline), ttfts_ms(timeline.during_fault)
        if not base or not fault:
            return CheckResult(name, False, "no successful stream in a phase")
        b50, b95, f50, f95 = percentile(base, 50), percentile(base, 95), percentile(fault, 50), percentile(fault, 95)
        passed = f50 - b50 <= max_added_p50_ms and f95 - b95 <= max_added_p95_ms
        return CheckResult(name, passed, f"p50 {b50:.0f} -> {f50:.0f} ms, p95 {b95:.0f} -> {f95:.0f} ms over "
                           f"{len(base)} and {len(fault)} streams (allowed +{max_added_p50_ms:.0f} / "
                           f"+{max_added_p95_ms:.0f} ms)")
    return check


# --- telemetry -------------------------------------------------------------------------------------------------

def telemetry_disconnected_during_fault(after_s: float = 1.5) -> Check:
    """Proves the cut took effect: every router reported its telemetry link down at some point of the fault."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        missing = [rid for rid in timeline.router_ids()
                   if not any(pr.telemetry_connected is False for pr in timeline.probes_of(rid)
                              if p.fault_start_s + after_s <= pr.t_s < p.fault_end_s)]
        return CheckResult("routers saw Redis gone", not missing,
                           "every router reported telemetry disconnected" if not missing
                           else f"still connected throughout the fault: {', '.join(missing)}")
    return check


def telemetry_resumes_within(limit_s: float) -> Check:
    """After recovery, every router flushed to Redis again within `limit_s` (a flush newer than the recovery)."""
    def check(timeline: Timeline) -> CheckResult:
        end_unix_ms = timeline.unix_ms(timeline.phases.fault_end_s)
        delays, late = [], []
        for rid in timeline.router_ids():
            resumed = next((pr for pr in timeline.probes_of(rid)
                            if pr.t_s >= timeline.phases.fault_end_s and pr.telemetry_connected
                            and pr.last_flush_unix_ms is not None and pr.last_flush_unix_ms >= end_unix_ms), None)
            if resumed is None or resumed.last_flush_unix_ms is None:
                late.append(f"{rid} never")
                continue
            delay = (resumed.last_flush_unix_ms - end_unix_ms) / 1000
            delays.append(f"{rid} {delay:.2f}s")
            if delay > limit_s:
                late.append(f"{rid} {delay:.2f}s")
        return CheckResult(f"telemetry resumes within {limit_s:g} s of recovery", not late,
                           "first flush after recovery: " + ", ".join(delays) if not late
                           else "late: " + ", ".join(late))
    return check


_WRITES = {"telemetry": "last_flush_unix_ms", "rate limits": "limits_synced_unix_ms"}


def redis_writes_resume_within(what: str, limit_s: float, after_event: str) -> Check:
    """Every router wrote `what` ("telemetry" or "rate limits") to Redis again within `limit_s` of
    `after_event`: a successful write later than the event (after a primary's loss, the new primary took it)."""
    field_name = _WRITES[what]

    def check(timeline: Timeline) -> CheckResult:
        name = f"{what} reach Redis again within {limit_s:g} s"
        fault = timeline.event(after_event)
        if fault is None:
            return CheckResult(name, False, f"no {after_event} event: the fault did not happen")
        since_unix_ms = timeline.unix_ms(fault.t_s)
        delays, late = [], []
        for rid in timeline.router_ids():
            written = [value for pr in timeline.probes_of(rid)
                       if (value := getattr(pr, field_name)) is not None and value >= since_unix_ms]
            if not written:
                late.append(f"{rid} never")
                continue
            delay = (min(written) - since_unix_ms) / 1000
            delays.append(f"{rid} {delay:.2f} s")
            if delay > limit_s:
                late.append(f"{rid} {delay:.2f} s")
        return CheckResult(name, not late and bool(delays), ("late: " + ", ".join(late)) if late
                           else f"first write after {after_event}: " + ", ".join(delays))
    return check


def jobs_accepted_again_within(limit_s: float, after_event: str) -> Check:
    """A job submitted after `after_event` was accepted within `limit_s` of it (refusals before are allowed: a
    job is refused rather than accepted when it cannot be kept)."""
    def check(timeline: Timeline) -> CheckResult:
        name = f"jobs accepted again within {limit_s:g} s"
        fault = timeline.event(after_event)
        if fault is None:
            return CheckResult(name, False, f"no {after_event} event: the fault did not happen")
        submits = [e for e in timeline.events if e.name == "job_submitted" and e.t_s >= fault.t_s]
        accepted = next((e for e in submits if e.detail.get("accepted")), None)
        refused = sum(1 for e in submits if not e.detail.get("accepted"))
        if accepted is None:
            return CheckResult(name, False, f"none of {len(submits)} jobs submitted after {after_event} was accepted")
        delay = accepted.t_s - fault.t_s
        return CheckResult(name, delay <= limit_s, f"first accepted {delay:.2f} s after {after_event}; {refused} "
                                                   "refused before (503: not kept, not accepted)")
    return check


def no_job_lost() -> Check:
    """Every job a router accepted, before the fault or during it, is still known afterwards and succeeded."""
    def check(timeline: Timeline) -> CheckResult:
        name = "no job lost"
        accepted = [str(e.detail["job"]) for e in timeline.events
                    if e.name == "job_submitted" and e.detail.get("accepted")]
        outcomes = {str(e.detail["job"]): str(e.detail["status"]) for e in timeline.events if e.name == "job_outcome"}
        if not accepted:
            return CheckResult(name, False, "no job was accepted: nothing to keep")
        status_of = {job: outcomes.get(job, "not checked") for job in accepted}
        unsettled = {job: status for job, status in status_of.items() if status != "succeeded"}
        counts: dict[str, int] = {}
        for status in status_of.values():
            counts[status] = counts.get(status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        return CheckResult(name, not unsettled, f"{len(accepted)} accepted jobs: {summary}" + (
            "; " + ", ".join(f"{job} {status}" for job, status in sorted(unsettled.items())[:5]) if unsettled else ""))
    return check


def dropped_samples_reported() -> Check:
    def check(timeline: Timeline) -> CheckResult:
        figures = []
        for rid in timeline.router_ids():
            probes = [pr for pr in timeline.probes_of(rid) if pr.dropped_samples is not None]
            if not probes:
                return CheckResult("dropped-sample count reported", False, f"{rid} never reported dropped_samples")
            before = next((pr.dropped_samples for pr in probes if pr.t_s >= timeline.phases.fault_start_s),
                          probes[0].dropped_samples) or 0
            peak_buffer = max((pr.buffered_batches or 0) for pr in probes)
            figures.append(f"{rid} dropped {(probes[-1].dropped_samples or 0) - before} "
                           f"(buffered up to {peak_buffer} batches)")
        return CheckResult("dropped-sample count reported", bool(figures), "; ".join(figures) or "no router probed")
    return check


# --- traffic and latency --------------------------------------------------------------------------------------

def _settled_fault(timeline: Timeline) -> list[RequestRecord]:
    settle = float(timeline.facts.get("settle_s", 1.0))
    return timeline.requests_between(timeline.phases.fault_start_s + settle, timeline.phases.fault_end_s)


def traffic_moves_away(max_share_ratio: float = 0.5, min_baseline_share: float = 0.1, *,
                       streams_only: bool = False) -> Check:
    """Once the routers had time to react, the faulted backend's share of every router region that used it
    before (at least `min_baseline_share` of its requests) fell to at most `max_share_ratio` of that share.
    Judged per region: a fast region moving plenty of requests elsewhere must not hide a region stuck on it.
    With `streams_only`, only streams are judged: under a fault that adds a fixed latency, a stream's first token
    always pays it, while a whole answer long enough is still fastest on a backend that decodes faster, and
    latency-first rightly keeps sending it there."""
    kept = "streams" if streams_only else "requests"

    def check(timeline: Timeline) -> CheckResult:
        backend = str(timeline.facts["backend"])
        name = f"traffic moves away from {backend}" + (" (streams)" if streams_only else "")
        baseline = [r for r in timeline.baseline if r.streamed or not streams_only]
        settled = [r for r in _settled_fault(timeline) if r.streamed or not streams_only]
        parts, failed = [], False
        for region in sorted({r.router_region for r in baseline}):
            before = share_by_backend(r for r in baseline if r.router_region == region).get(backend, 0.0)
            if before < min_baseline_share:
                continue
            mine = [r for r in settled if r.router_region == region]
            during = share_by_backend(mine).get(backend, 0.0)
            ok = bool(mine) and during <= max_share_ratio * before
            failed |= not ok
            parts.append(f"{region} routers {before:.0%} -> {during:.0%}")
        if not parts:
            return CheckResult(name, False, f"{backend} served under {min_baseline_share:.0%} of every region's "
                                            f"{kept} before the fault: nothing to move")
        return CheckResult(name, not failed, "; ".join(parts) + f" (share of {kept} served, from "
                           f"{timeline.facts.get('settle_s', 1.0)} s into the fault; at most {max_share_ratio:.0%} "
                           "of before required)")
    return check


def _alternative_ttft_p95_ms(timeline: Timeline, client_region: str) -> float | None:
    """What the best other deployment gave before the fault, as seen from `client_region`: its baseline TTFT
    p95 with the RTT corrected from where it was measured to `client_region`."""
    backend = timeline.facts["backend"]
    regions = timeline.facts.get("deployment_regions", {})
    rtt = timeline.facts.get("rtt_ms", {})
    best: float | None = None
    for deployment in regions:
        if deployment == backend:
            continue
        for router_region in {r.router_region for r in timeline.baseline}:
            served = ttfts_ms(r for r in timeline.baseline
                               if r.backend == deployment and r.router_region == router_region)
            if len(served) < 3:
                continue
            home = regions[deployment]
            estimate = (percentile(served, 95) - rtt.get(router_region, {}).get(home, 0.0)
                        + rtt.get(client_region, {}).get(home, 0.0))
            best = estimate if best is None else min(best, estimate)
    return best


def ttft_p95_within_budget() -> Check:
    """Once the routers reacted, each client region's streams get their first token within the budget at p95,
    wherever another deployment could meet it (judged by that deployment's baseline TTFT p95 plus the RTT from
    the client's region)."""
    def check(timeline: Timeline) -> CheckResult:
        budget = float(timeline.facts["budget_ms"])
        settled = _settled_fault(timeline)
        parts, failed = [], False
        for region in sorted({r.client_region for r in timeline.requests}):
            alternative = _alternative_ttft_p95_ms(timeline, region)
            values = ttfts_ms(r for r in settled if r.client_region == region)
            p95 = percentile(values, 95)
            if alternative is None or alternative > budget:
                parts.append(f"{region} TTFT p95 {p95:.0f} ms (no other deployment meets {budget:.0f} ms: "
                             "not judged)")
                continue
            ok = bool(values) and p95 <= budget
            failed |= not ok
            parts.append(f"{region} TTFT p95 {p95:.0f} ms {'<=' if ok else '>'} {budget:.0f} ms over "
                         f"{len(values)} streams (another deployment gives ~{alternative:.0f} ms)")
        return CheckResult("time to first token within the budget where another deployment meets it", not failed,
                           "; ".join(parts))
    return check


# --- breakers ------------------------------------------------------------------------------------------------

def breaker_opens(*, or_traffic_left_first: bool = False) -> Check:
    """A router showed the backend's breaker open (or half-open) during the fault. With
    `or_traffic_left_first`, it also passes when no request started on the backend once the routers had time
    to react: predicted latency moved the traffic before enough slow answers came to open the breaker, which
    is the better outcome, and the detail says so."""
    def check(timeline: Timeline) -> CheckResult:
        backend = str(timeline.facts["backend"])
        p = timeline.phases
        name = f"breaker of {backend} opens" + (" (or traffic left it first)" if or_traffic_left_first else "")
        opened = [pr for pr in timeline.router_probes
                  if p.fault_start_s <= pr.t_s <= p.fault_end_s + 0.5 and pr.breaker(backend) in ("open", "half-open")]
        if opened:
            first = min(opened, key=lambda pr: pr.t_s)
            routers = sorted({pr.router_id for pr in opened})
            return CheckResult(name, True, f"open on {', '.join(routers)}; first seen "
                                           f"{first.t_s - p.fault_start_s:.2f} s into the fault")
        sent = [r for r in _settled_fault(timeline) if r.backend == backend]
        if or_traffic_left_first and not sent:
            return CheckResult(name, True, "never open: no request started on it from "
                                           f"{timeline.facts.get('settle_s', 1.0)} s into the fault, so no slow "
                                           "answers came to open it")
        return CheckResult(name, False, "no router showed it open during the fault"
                           + (f" and {len(sent)} requests still went to it" if or_traffic_left_first else "")
                           + (f" ({timeline.facts['breaker_note']})" if timeline.facts.get("breaker_note") else ""))
    return check


def share_back_after_recovery(min_ratio: float = 0.5, within_s: float = 10.0, window_s: float = 3.0,
                              min_baseline_share: float = 0.25) -> Check:
    """Measured on traffic, not on state: in every router region where the backend served at least
    `min_baseline_share` before the fault, some `window_s` window that ends within `within_s` of the recovery
    sees it serve at least `min_ratio` of its share before the fault. (A region that sent it only a few long
    answers has too few of them in a window to judge.)"""
    def check(timeline: Timeline) -> CheckResult:
        backend = str(timeline.facts["backend"])
        name = f"{backend} regains {min_ratio:.0%} of its share within {within_s:g} s of recovery"
        recovery_s = timeline.phases.fault_end_s
        if timeline.phases.end_s - recovery_s < within_s:
            return CheckResult(name, False, f"the recovery lasted {timeline.phases.end_s - recovery_s:.1f} s: too "
                                            f"short to judge (needs {within_s:g} s)")
        parts, failed = [], False
        for region in sorted({r.router_region for r in timeline.baseline}):
            before = share_by_backend(r for r in timeline.baseline if r.router_region == region).get(backend, 0.0)
            if before < min_baseline_share:
                continue
            mine = [r for r in timeline.recovery if r.router_region == region]
            back = share_recovery(mine, backend, min_ratio * before, recovery_s, within_s, window_s)
            failed |= back.back_at_s is None
            parts.append(f"{region} routers {before:.0%} before, " + (
                f"{back.best_share:.0%} in the window from +{back.back_at_s:.1f} s" if back.back_at_s is not None
                else f"at most {back.best_share:.0%} within {within_s:g} s"))
        if not parts:
            return CheckResult(name, False, f"{backend} served under {min_baseline_share:.0%} of every region's "
                                            "requests before the fault: nothing to come back to")
        return CheckResult(name, not failed, "; ".join(parts) + f" (windows of {window_s:g} s)")
    return check


# --- the control plane ---------------------------------------------------------------------------------------

def versions_never_go_backwards() -> Check:
    def check(timeline: Timeline) -> CheckResult:
        regressions = []
        for rid in timeline.router_ids():
            held = [pr for pr in timeline.probes_of(rid) if pr.table_version is not None]
            for a, b in zip(held, held[1:], strict=False):
                if b.table_version is not None and a.table_version is not None and b.table_version < a.table_version:
                    regressions.append(f"{rid} v{a.table_version} -> v{b.table_version} at t={b.t_s:.2f}s")
        versions = sorted({pr.table_version for pr in timeline.router_probes if pr.table_version is not None})
        return CheckResult("table versions never go backwards", not regressions,
                           "; ".join(regressions) if regressions
                           else f"versions seen {versions[0] if versions else '-'}..{versions[-1] if versions else '-'}"
                                f" ({len(versions)} distinct), monotonic on every router")
    return check


def new_leader_within_lease() -> Check:
    """After the leader was killed, another replica is leader within lease TTL + 1 s."""
    def check(timeline: Timeline) -> CheckResult:
        killed = timeline.event("replica_killed")
        ttl = float(timeline.facts["lease_ttl_s"])
        limit = ttl + 1.0
        name = f"new leader within lease TTL + 1 s ({limit:g} s)"
        if killed is None:
            return CheckResult(name, False, "no replica was killed")
        victim = killed.detail["replica"]
        elected = next((pr for pr in sorted(timeline.replica_probes, key=lambda pr: pr.t_s)
                        if pr.t_s > killed.t_s and pr.role == "leader" and pr.replica != victim), None)
        if elected is None:
            return CheckResult(name, False, f"no other replica became leader after {victim} was killed")
        delay = elected.t_s - killed.t_s
        return CheckResult(name, delay <= limit, f"{elected.replica} leader {delay:.2f} s after {victim} "
                                                 f"(pid {killed.detail.get('pid')}) was killed")
    return check


def leadership_holds(after_event: str) -> Check:
    """After `after_event`, the leader keeps leading, or a replica leads again within lease TTL + 1 s: no
    stretch of replica probes without a leader lasts longer, and one leads at the end of the fault."""
    def check(timeline: Timeline) -> CheckResult:
        ttl = float(timeline.facts["lease_ttl_s"])
        limit = ttl + 1.0
        name = f"a leader throughout, or again within lease TTL + 1 s ({limit:g} s)"
        fault = timeline.event(after_event)
        if fault is None:
            return CheckResult(name, False, f"no {after_event} event: the fault did not happen")
        probes = sorted((p for p in timeline.replica_probes if fault.t_s <= p.t_s < timeline.phases.fault_end_s),
                        key=lambda p: p.t_s)
        if not probes:
            return CheckResult(name, False, "no replica was probed during the fault")
        role: dict[str, str | None] = {}
        leaders: list[tuple[float, list[str]]] = []
        for probe in probes:
            role[probe.replica] = probe.role
            leaders.append((probe.t_s, sorted(r for r, now in role.items() if now == "leader")))
        longest, since = 0.0, None
        for t, leading in leaders:
            if leading:
                since = None
            else:
                since = t if since is None else since
                longest = max(longest, t - since)
        held = sorted({replica for _, leading in leaders for replica in leading})
        last = leaders[-1][1]
        passed = longest <= limit and bool(last)
        return CheckResult(name, passed, f"leaders during the fault: {', '.join(held) or 'none'}; longest time "
                                         f"without one {longest:.2f} s; at the end: {', '.join(last) or 'none'}")
    return check


def policy_pushes_reach_routers(limit_s: float) -> Check:
    """Within `limit_s` of each policy push of the fault (a `policy_pushed` event setting latency_budget_ms),
    every router of its region held it or a later push: tables carry the whole policy in force, so a push
    replaced before a table was computed from it reaches the routers as part of the next one."""
    def check(timeline: Timeline) -> CheckResult:
        name = f"policy pushes reach the routers within {limit_s:g} s"
        pushes = sorted((e for e in timeline.events if e.name == "policy_pushed"),
                        key=lambda e: float(e.detail["sent_s"]))
        if not pushes:
            return CheckResult(name, False, "no policy was pushed during the fault")
        parts, late = [], []
        for index, push in enumerate(pushes):
            region, model, budget = push.detail["region"], push.detail["model"], push.detail["latency_budget_ms"]
            this_or_later = {p.detail["latency_budget_ms"] for p in pushes[index:]
                             if (p.detail["region"], p.detail["model"]) == (region, model)}
            sent = float(push.detail["sent_s"])
            routers = sorted({p.router_id for p in timeline.router_probes if p.region == region})
            arrivals = [next((p.t_s for p in timeline.probes_of(rid)
                              if p.t_s >= sent and p.latency_budget_ms(model) in this_or_later), None)
                        for rid in routers]
            if not routers or None in arrivals:
                late.append(f"{budget} ms never reached {region}")
                continue
            delay = max(t for t in arrivals if t is not None) - sent
            parts.append(f"{budget} ms {delay:.2f} s ({push.detail['attempts']} attempt(s))")
            if delay > limit_s:
                late.append(f"{budget} ms after {delay:.2f} s")
        return CheckResult(name, not late, ("late: " + "; ".join(late) + "; ") * bool(late)
                           + "every router of the region held each pushed budget (or a later one) after: "
                           + ", ".join(parts))
    return check


def _max_version(probes: Sequence[RouterProbe]) -> int:
    return max((pr.table_version for pr in probes if pr.table_version is not None), default=0)


def no_publication_without_leadership(grace_s: float = 1.0) -> Check:
    """With etcd cut: no table version newer than the one held at the cut (plus `grace_s` for one in flight)
    reaches a router, and every replica stops saying it publishes within lease TTL + 1 s."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        ttl = float(timeline.facts["lease_ttl_s"])
        cut = p.fault_start_s + grace_s
        held = _max_version([pr for pr in timeline.router_probes if pr.t_s <= cut])
        during = _max_version([pr for pr in timeline.router_probes if cut < pr.t_s < p.fault_end_s])
        publishing = sorted({pr.replica for pr in timeline.replica_probes
                             if p.fault_start_s + ttl + 1.0 <= pr.t_s < p.fault_end_s and pr.publishing})
        problems = []
        if p.fault_end_s - p.fault_start_s <= ttl + 1.5:
            problems.append(f"the cut lasted {p.fault_end_s - p.fault_start_s:.1f} s: too short to see leadership "
                            f"lapse (lease TTL {ttl:g} s + 1 s); run it longer")
        if during > held:
            problems.append(f"routers received v{during} during the cut (held v{held} at it)")
        if publishing:
            problems.append(f"still publishing {ttl + 1.0:g} s into the cut: {', '.join(publishing)}")
        roles = sorted({f"{pr.replica}={pr.role}" for pr in timeline.replica_probes
                        if p.fault_start_s + ttl + 1.0 <= pr.t_s < p.fault_end_s})
        return CheckResult("no table published without proven leadership", not problems,
                           "; ".join(problems) if problems
                           else f"routers stayed on v{held}; replicas during the cut: {', '.join(roles) or '-'}")
    return check


def publishing_resumes(within_s: float | None = None) -> Check:
    """After recovery a replica leads and publishes again (within `within_s`, default the whole recovery)."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        limit = within_s if within_s is not None else p.end_s - p.fault_end_s
        leader = next((pr for pr in sorted(timeline.replica_probes, key=lambda pr: pr.t_s)
                       if pr.t_s >= p.fault_end_s and pr.role == "leader" and pr.publishing), None)
        if leader is None:
            return CheckResult("publishing resumes after recovery", False,
                               f"no replica led and published within {limit:.1f} s of recovery")
        delay = leader.t_s - p.fault_end_s
        before = _max_version([pr for pr in timeline.router_probes if pr.t_s < p.fault_end_s])
        after = _max_version([pr for pr in timeline.router_probes if pr.t_s >= p.fault_end_s])
        new_table = f"; routers then received v{after}" if after > before else "; no new table was needed yet"
        return CheckResult("publishing resumes after recovery", delay <= limit,
                           f"{leader.replica} leads and publishes {delay:.2f} s after recovery{new_table}")
    return check


def routers_keep_last_table(after_s: float = 1.0) -> Check:
    """Cut from every replica, each router keeps the table it held (same version) and says its link is down."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        problems, parts = [], []
        for rid in timeline.router_ids():
            probes = timeline.probes_of(rid)
            at_cut = [pr for pr in probes if pr.t_s <= p.fault_start_s and pr.table_version is not None]
            during = [pr for pr in probes if p.fault_start_s + after_s <= pr.t_s < p.fault_end_s and pr.reachable]
            if not at_cut or not during:
                problems.append(f"{rid}: not probed around the cut")
                continue
            held = at_cut[-1].table_version
            changed = sorted({pr.table_version for pr in during if pr.table_version != held}, key=str)
            links = sorted({str(pr.control_plane_link) for pr in during})
            if changed:
                problems.append(f"{rid}: table changed to {changed} while cut off")
            if "connected" in links and len(links) == 1:
                problems.append(f"{rid}: link still connected (the cut did not take)")
            parts.append(f"{rid} kept v{held} (link {'/'.join(links)})")
        return CheckResult("routers serve from their last table", not problems, "; ".join(problems or parts))
    return check


def routers_resync() -> Check:
    """After recovery each router is connected to a replica again and holds the newest version any router
    of its region held."""
    def check(timeline: Timeline) -> CheckResult:
        p = timeline.phases
        problems, parts = [], []
        for rid in timeline.router_ids():
            probes = [pr for pr in timeline.probes_of(rid) if pr.t_s >= p.fault_end_s and pr.reachable]
            connected = next((pr for pr in probes if pr.control_plane_link == "connected"), None)
            if connected is None:
                problems.append(f"{rid}: not reconnected")
                continue
            region = probes[-1].region
            newest = _max_version([pr for pr in timeline.router_probes if pr.region == region])
            if (probes[-1].table_version or 0) < newest:
                problems.append(f"{rid}: holds v{probes[-1].table_version}, v{newest} exists")
                continue
            parts.append(f"{rid} reconnected {connected.t_s - p.fault_end_s:.2f} s after recovery, "
                         f"holds v{probes[-1].table_version}")
        return CheckResult("routers re-sync after recovery", not problems, "; ".join(problems or parts))
    return check


# --- regions -------------------------------------------------------------------------------------------------

def served_by_other_regions() -> Check:
    """The partitioned region's clients were served during the fault, by deployments of other regions."""
    def check(timeline: Timeline) -> CheckResult:
        region = str(timeline.facts["region"])
        mine = [r for r in _settled_fault(timeline) if r.client_region == region]
        served = [r for r in mine if r.ok]
        local = [r for r in served if r.backend_region == region]
        elsewhere = sorted({f"{r.backend} ({r.backend_region})" for r in served if r.backend_region != region})
        passed = bool(served) and not local and len(served) == len(mine)
        return CheckResult(f"{region} clients served by other regions", passed,
                           f"{len(served)} of {len(mine)} requests from {region} served, {len(local)} locally; "
                           f"by {', '.join(elsewhere) or 'nothing'}")
    return check
