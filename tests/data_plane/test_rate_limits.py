"""Rate limits without I/O: client verdicts and headers, deployment blocks, table changes, and routers
sharing a region's buckets through an in-memory stand-in for the Redis script (same arithmetic)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from data_plane.limits.rate_limits import LOCAL_SHARE, SHARED, Limits, RateLimits, SyncReply, duration_text


def limits_for(rpm: int = 0, tpm: int = 0, *, deployment: Limits | None = None) -> RateLimits:
    limits = RateLimits("r")
    limits.apply({"m": Limits(rpm, tpm)}, {("m", "d"): deployment or Limits()}, 0.0)
    return limits


def test_client_over_its_rpm_gets_a_refusal_with_a_wait_and_openai_headers() -> None:
    limits = limits_for(rpm=60)
    verdicts = [limits.check_client("m", "k", 10, 0.0) for _ in range(61)]
    assert all(v.allowed for v in verdicts[:60]) and not verdicts[60].allowed
    refused = verdicts[60]
    assert refused.retry_after_s == pytest.approx(1.0)
    assert refused.reason == "rpm 60"
    assert refused.headers["x-ratelimit-limit-requests"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert verdicts[0].headers["x-ratelimit-remaining-requests"] == "59"
    assert limits.check_client("m", "other-key", 10, 0.0).allowed  # per key
    assert limits.check_client("m", "k", 10, 1.0).allowed  # refilled


def test_token_limit_charges_the_estimate_then_settles_the_real_usage() -> None:
    limits = limits_for(tpm=1000)
    assert limits.check_client("m", "k", 100, 0.0).allowed
    limits.settle_client("m", "k", 100, 700, 0.0)  # 600 more than estimated
    verdict = limits.check_client("m", "k", 350, 0.0)
    assert not verdict.allowed and verdict.reason == "tpm 1000"
    assert verdict.headers["x-ratelimit-remaining-tokens"] == "300"
    assert limits.check_client("m", "k", 300, 0.0).allowed


def test_a_model_without_client_limits_adds_nothing() -> None:
    verdict = limits_for().check_client("m", "k", 10, 0.0)
    assert verdict.allowed and not verdict.headers


def test_deployment_at_its_rate_is_blocked_until_it_refills() -> None:
    limits = limits_for(deployment=Limits(rpm=2))
    assert limits.deployment_block("m", "d", 0, 0.0) is None
    assert limits.take_deployment("m", "d", 0, 0.0) and limits.take_deployment("m", "d", 0, 0.0)
    assert limits.deployment_block("m", "d", 0, 0.0) == "rate limited: rpm 2 reached"
    assert limits.deployment_block("m", "d", 0, 30.0) is None
    assert limits.deployment_block("m", "unlimited", 0, 0.0) is None


def test_a_new_table_keeps_what_was_used_and_drops_removed_limits() -> None:
    limits = limits_for(rpm=10)
    for _ in range(4):
        limits.check_client("m", "k", 1, 0.0)
    limits.apply({"m": Limits(rpm=20)}, {}, 0.0)
    assert limits.check_client("m", "k", 1, 0.0).headers["x-ratelimit-remaining-requests"] == "15"
    limits.apply({"m": Limits()}, {}, 0.0)
    assert limits.check_client("m", "k", 1, 0.0).allowed
    assert limits.status()["client_buckets"] == 0


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (0.25, "250ms"), (1, "1s"), (61.5, "1m1.5s"),
                                               (360, "6m0s")])
def test_reset_durations_in_openai_format(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


@dataclass
class Region:
    """The Redis script's arithmetic over plain dicts."""

    levels: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    routers: set[str] = field(default_factory=set)
    release_s: float = 0.75

    def sync(self, router: str, limits: RateLimits, now: float) -> None:
        self.routers.add(router)
        batch = limits.sync_batch(now)
        grants = []
        for entry in batch.entries:
            level, at, reserve, born = self.levels.get(entry.redis_key, (0.0, now, float(entry.capacity), now))
            if reserve > 0 and now - born >= self.release_s:
                level, reserve = level + reserve, 0.0
            covered = min(entry.provisional, reserve)
            reserve -= covered
            level -= entry.provisional - covered
            level = min(entry.capacity - reserve, level + (now - at) * 1000 * entry.refill_per_ms)
            level = max(-entry.capacity, min(entry.capacity - reserve, level + entry.delta))
            grant = min(entry.want, level / len(self.routers)) if entry.want > 0 and level > 0 else 0.0
            self.levels[entry.redis_key] = (level - grant, now, reserve, born)
            grants.append((grant, level - grant))
        limits.sync_done(batch, SyncReply(len(self.routers), tuple(grants)), now)


def _hammer(region: Region, routers: dict[str, RateLimits], seconds: float, load: dict[str, int],
            key: str = "k") -> dict[str, int]:
    """Each router sees load[name] requests per 10 ms of the same client and syncs every 250 ms, at
    staggered times."""
    admitted = dict.fromkeys(routers, 0)
    rng = random.Random(7)
    offsets = {name: rng.uniform(0, 0.25) for name in routers}
    steps = int(seconds / 0.01)
    for step in range(steps):
        now = step * 0.01
        for name, limits in routers.items():
            for _ in range(load[name]):
                admitted[name] += limits.check_client("m", key, 1, now).allowed
            if (step * 0.01 - offsets[name]) % 0.25 < 0.01:
                region.sync(name, limits, now)
    return admitted


def test_two_routers_together_hold_the_region_limit() -> None:
    region = Region()
    routers = {name: limits_for(rpm=120) for name in ("a", "b")}
    for _ in range(2):  # heartbeats before any traffic: each knows there are two
        for name, limits in routers.items():
            region.sync(name, limits, 0.0)
    admitted = _hammer(region, routers, 5.0, {"a": 3, "b": 3})
    assert all(limits.mode == SHARED for limits in routers.values())
    expected = 120 + 2 * 5  # the full bucket, then 2 per second
    assert expected * 0.9 <= sum(admitted.values()) <= expected * 1.1, admitted


def test_one_busy_router_gets_most_of_the_region_allowance() -> None:
    region = Region()
    routers = {name: limits_for(rpm=120) for name in ("a", "b")}
    for _ in range(2):
        for name, limits in routers.items():
            region.sync(name, limits, 0.0)
    admitted = _hammer(region, routers, 3.0, {"a": 3, "b": 0})
    assert admitted["a"] >= (120 + 2 * 3) * 0.85, admitted


def test_without_the_store_each_router_holds_its_local_share() -> None:
    region = Region()
    limits = limits_for(rpm=120)
    region.sync("a", limits, 0.0)
    region.sync("a", limits, 0.0)
    limits.sync_done(limits.sync_batch(0.0), SyncReply(2, ()), 0.0)
    assert limits.sync_failed(limits.sync_batch(0.0), 0.0, "redis unreachable: ConnectionError")
    assert not limits.sync_failed(limits.sync_batch(0.0), 0.0, "still")  # one change, reported once
    assert limits.status()["mode"] == LOCAL_SHARE and limits.routers == 2
    admitted = sum(limits.check_client("m", "fresh", 1, t / 100).allowed for t in range(300))
    assert admitted == pytest.approx(60 + 3, abs=2)  # its half of the bucket and of the refill
