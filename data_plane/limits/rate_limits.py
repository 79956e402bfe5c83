"""Per client key and per deployment rate limits (requests and tokens per minute), held for the region as a
whole: each router owns a holding of tokens it may spend without asking anyone, and a periodic sync with
the region's shared buckets (a shell, `shared_limits.py`) reports what it took, returns what it does not
need and receives a grant of at most its fair share. When the shared store is unreachable each router runs
its own bucket with limit / routers-in-the-region, so the backends stay protected.

Pure: no clock, no I/O; every method takes `now`. Client identities arrive already hashed: no API key is
held here, in Redis keys or in `/routing`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from data_plane.limits.token_bucket import TokenBucket

SHARED = "shared"
LOCAL_SHARE = "local-share"

REQUESTS = "requests"
TOKENS = "tokens"


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int = 0  # 0 = no limit
    tpm: int = 0

    def of(self, kind: str) -> int:
        return self.rpm if kind == REQUESTS else self.tpm


@dataclass(slots=True)
class SharedBucket:
    """One limit of one subject: this router's holding and what the next sync has to report."""

    redis_key: str
    per_minute: int
    holding: TokenBucket
    region_level: float  # the region bucket's level at the last sync (holdings excluded)
    taken_unreported: float = 0.0  # put into the holding without a grant; charged at the next sync
    provisional: float = 0.0  # the share a new subject starts with, claimed from the region's reserve
    demand: float = 0.0  # asked for since the last sync, granted or not
    largest: float = 1.0  # the largest single charge seen: the holding keeps at least that much
    touched: bool = False

    @property
    def refill_per_s(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class SyncEntry:
    redis_key: str
    capacity: int
    refill_per_ms: float
    delta: float  # tokens given back to the region bucket (negative: taken without a grant)
    want: float  # grant asked for
    provisional: float  # this router's starting share of a new subject, covered by the region's reserve
    # what was moved out of the holding for this batch, restored if the sync fails
    returned: float
    unreported: float
    unreported_provisional: float
    demand: float


@dataclass(frozen=True, slots=True)
class SyncBatch:
    entries: tuple[SyncEntry, ...]
    mode: str  # the mode the batch was built in


@dataclass(frozen=True, slots=True)
class SyncReply:
    routers: int
    grants: tuple[tuple[float, float], ...]  # (grant, region level after it) per entry


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    headers: Mapping[str, str]  # OpenAI's x-ratelimit-* (empty without limits)
    reason: str = ""  # why it was refused, e.g. "rpm 120"


ALLOWED = Verdict(True, 0.0, {})


def duration_text(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `250ms`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes >= 1 else f"{rest_text}s"


_MAX_RETRY_AFTER_S = 60.0


@dataclass(slots=True)
class RateLimits:
    region: str
    sync_interval_s: float = 0.25
    max_client_keys: int = 10_000
    mode: str = LOCAL_SHARE
    routers: int = 1
    reason: str = "no shared store configured"
    _client_limits: dict[str, Limits] = field(default_factory=dict)
    _deployment_limits: dict[tuple[str, str], Limits] = field(default_factory=dict)
    _clients: OrderedDict[tuple[str, str, str], SharedBucket] = field(default_factory=OrderedDict)
    _deployments: dict[tuple[str, str, str], SharedBucket] = field(default_factory=dict)

    # --- configuration -------------------------------------------------------------------------------

    def apply(self, client_limits: Mapping[str, Limits], deployment_limits: Mapping[tuple[str, str], Limits],
              now: float) -> None:
        """The limits of a new table. Buckets whose limit changed keep what they have used; buckets whose
        limit is gone are dropped."""
        self._client_limits = {m: lim for m, lim in client_limits.items() if lim.rpm or lim.tpm}
        self._deployment_limits = {k: lim for k, lim in deployment_limits.items() if lim.rpm or lim.tpm}
        for key in list(self._clients):
            model, _, kind = key
            self._resize(self._clients, key, self._client_limits.get(model, Limits()).of(kind), now)
        for key in list(self._deployments):
            model, name, kind = key
            self._resize(self._deployments, key, self._deployment_limits.get((model, name), Limits()).of(kind),
                         now)

    def _resize(self, buckets: dict[tuple[str, str, str], SharedBucket], key: tuple[str, str, str],
                per_minute: int, now: float) -> None:
        bucket = buckets[key]
        if per_minute <= 0:
            del buckets[key]
            return
        if per_minute != bucket.per_minute:
            bucket.per_minute = per_minute
            capacity, refill = self._shape(per_minute)
            bucket.holding.reconfigure(capacity, refill, now)

    def _shape(self, per_minute: int) -> tuple[float, float]:
        """Capacity and local refill of a holding in the current mode."""
        if self.mode == SHARED:
            return float(per_minute), 0.0
        share = max(1, self.routers)
        return per_minute / share, per_minute / 60.0 / share

    def _new_bucket(self, redis_key: str, per_minute: int, now: float) -> SharedBucket:
        capacity, refill = self._shape(per_minute)
        share = per_minute / max(1, self.routers)
        # A new subject starts with its local share in hand (charged to the region at the next sync), so
        # its first request never waits for a sync.
        holding = TokenBucket(capacity, refill, min(capacity, share), now)
        return SharedBucket(redis_key, per_minute, holding, region_level=per_minute - share,
                            provisional=share if self.mode == SHARED else 0.0)

    # --- clients -------------------------------------------------------------------------------------

    def client_limits(self, model: str) -> Limits:
        return self._client_limits.get(model, Limits())

    def _client_bucket(self, model: str, client_id: str, kind: str, per_minute: int, now: float) -> SharedBucket:
        key = (model, client_id, kind)
        bucket = self._clients.get(key)
        if bucket is None:
            bucket = self._clients[key] = self._new_bucket(
                f"meridian:rl:{self.region}:client:{model}:{client_id}:{kind}", per_minute, now)
            while len(self._clients) > self.max_client_keys:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(key)
        return bucket

    def check_client(self, model: str, client_id: str, tokens: int, now: float) -> Verdict:
        """Takes one request and the prompt estimate from the client's buckets, or neither."""
        limits = self._client_limits.get(model)
        if limits is None:
            return ALLOWED
        charges = [(kind, per_minute, float(1 if kind == REQUESTS else tokens))
                   for kind, per_minute in ((REQUESTS, limits.rpm), (TOKENS, limits.tpm)) if per_minute > 0]
        buckets = [(kind, self._client_bucket(model, client_id, kind, per_minute, now), n)
                   for kind, per_minute, n in charges]
        refused = [(kind, b, n) for kind, b, n in buckets if not self._can_take(b, n, now)]
        for _, bucket, n in buckets:
            bucket.touched = True
            bucket.demand += n
            bucket.largest = max(bucket.largest, n)
        if refused:
            wait = max(self._retry_after_s(b, n, now) for _, b, n in refused)
            reason = ", ".join(f"{'rpm' if k == REQUESTS else 'tpm'} {b.per_minute}" for k, b, _ in refused)
            return Verdict(False, wait, self._headers(buckets, now), reason)
        for _, bucket, n in buckets:
            bucket.holding.try_take(self._charge(bucket, n), now)
        return Verdict(True, 0.0, self._headers(buckets, now))

    def settle_client(self, model: str, client_id: str, estimated: int, actual: int, now: float) -> None:
        bucket = self._clients.get((model, client_id, TOKENS))
        if bucket is not None and actual != estimated:
            moved = bucket.holding.settle(self._charge(bucket, estimated), actual, now)
            bucket.demand += max(0.0, moved)

    # --- deployments ---------------------------------------------------------------------------------

    def _deployment_buckets(self, model: str, deployment: str, tokens: int, now: float
                            ) -> list[tuple[str, SharedBucket, float]]:
        limits = self._deployment_limits.get((model, deployment))
        if limits is None:
            return []
        result = []
        for kind, per_minute in ((REQUESTS, limits.rpm), (TOKENS, limits.tpm)):
            if per_minute <= 0:
                continue
            key = (model, deployment, kind)
            bucket = self._deployments.get(key)
            if bucket is None:
                bucket = self._deployments[key] = self._new_bucket(
                    f"meridian:rl:{self.region}:deployment:{model}:{deployment}:{kind}", per_minute, now)
            result.append((kind, bucket, float(1 if kind == REQUESTS else tokens)))
        return result

    def deployment_block(self, model: str, deployment: str, tokens: int, now: float) -> str | None:
        """Why the deployment cannot take this request now (its rpm or tpm is spent), or None."""
        for kind, bucket, n in self._deployment_buckets(model, deployment, tokens, now):
            if not self._can_take(bucket, n, now):
                return f"rate limited: {'rpm' if kind == REQUESTS else 'tpm'} {bucket.per_minute} reached"
        return None

    def take_deployment(self, model: str, deployment: str, tokens: int, now: float) -> bool:
        buckets = self._deployment_buckets(model, deployment, tokens, now)
        for _, bucket, n in buckets:
            bucket.touched = True
            bucket.demand += n
            bucket.largest = max(bucket.largest, n)
        if any(not self._can_take(b, n, now) for _, b, n in buckets):
            return False
        for _, bucket, n in buckets:
            bucket.holding.try_take(self._charge(bucket, n), now)
        return True

    def settle_deployment(self, model: str, deployment: str, estimated: int, actual: int, now: float) -> None:
        bucket = self._deployments.get((model, deployment, TOKENS))
        if bucket is not None and actual != estimated:
            moved = bucket.holding.settle(self._charge(bucket, estimated), actual, now)
            bucket.demand += max(0.0, moved)

    def deployment_retry_after_s(self, model: str, deployment: str, tokens: int, now: float) -> float:
        return max((self._retry_after_s(b, n, now) for _, b, n in self._deployment_buckets(
            model, deployment, tokens, now)), default=0.0)

    # --- shared by both ------------------------------------------------------------------------------

    @staticmethod
    def _charge(bucket: SharedBucket, n: float) -> float:
        # A charge above the whole capacity could never pass: it takes the whole bucket instead.
        return min(n, bucket.holding.capacity)

    def _can_take(self, bucket: SharedBucket, n: float, now: float) -> bool:
        return bucket.holding.remaining(now) >= self._charge(bucket, n) and bucket.holding.capacity > 0

    def _share_rate(self, bucket: SharedBucket) -> float:
        return bucket.refill_per_s / max(1, self.routers)

    def _retry_after_s(self, bucket: SharedBucket, n: float, now: float) -> float:
        wait = bucket.holding.retry_after_s(self._charge(bucket, n), now, self._share_rate(bucket))
        if self.mode == SHARED:
            wait = max(wait, self.sync_interval_s)  # tokens arrive with a grant, at the next sync at best
        return min(_MAX_RETRY_AFTER_S, wait) if math.isfinite(wait) else _MAX_RETRY_AFTER_S

    def _remaining(self, bucket: SharedBucket, now: float) -> float:
        held = bucket.holding.remaining(now)
        region = bucket.region_level + held if self.mode == SHARED else held * max(1, self.routers)
        return max(0.0, min(float(bucket.per_minute), region))

    def _headers(self, buckets: Iterable[tuple[str, SharedBucket, float]], now: float) -> dict[str, str]:
        headers = {}
        for kind, bucket, _ in buckets:
            remaining = self._remaining(bucket, now)
            reset_s = (bucket.per_minute - remaining) / bucket.refill_per_s if bucket.refill_per_s else 0.0
            headers[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{kind}"] = duration_text(reset_s)
        return headers

    # --- region sync ---------------------------------------------------------------------------------

    def _all(self) -> Iterable[SharedBucket]:
        yield from self._clients.values()
        yield from self._deployments.values()

    def sync_batch(self, now: float) -> SyncBatch:
        """What to send now. Moves the reported amounts out of the buckets (so consumption during the round
        trip counts in the next batch); `sync_failed` puts them back."""
        entries = []
        for bucket in self._all():
            if self.mode != SHARED:
                # Local refills are not the region's tokens: the sync only heartbeats until the store is back.
                bucket.touched, bucket.demand = False, 0.0
                continue
            held = bucket.holding.remaining(now)
            floor = min(bucket.per_minute / max(1, self.routers),
                        max(bucket.largest, 2 * self._share_rate(bucket) * self.sync_interval_s))
            target = max(floor, 2 * bucket.demand)
            returned = max(0.0, held - 2 * target)
            want = max(0.0, target - (held - returned))
            if not (bucket.touched or bucket.taken_unreported or bucket.provisional or returned or want > 1e-9):
                continue
            if returned:
                bucket.holding.level -= returned
            entries.append(SyncEntry(bucket.redis_key, bucket.per_minute, bucket.refill_per_s / 1000,
                                     returned - bucket.taken_unreported, want, bucket.provisional, returned,
                                     bucket.taken_unreported, bucket.provisional, bucket.demand))
            bucket.touched, bucket.taken_unreported, bucket.provisional, bucket.demand = False, 0.0, 0.0, 0.0
        return SyncBatch(tuple(entries), self.mode)

    def _by_key(self) -> dict[str, SharedBucket]:
        return {b.redis_key: b for b in self._all()}

    def sync_done(self, batch: SyncBatch, reply: SyncReply, now: float) -> bool:
        """Applies the grants; returns True when the mode changed (to shared)."""
        by_key = self._by_key()
        changed = self.mode != SHARED
        self.routers = max(1, reply.routers)
        self.reason = ""
        if changed:
            self.mode = SHARED
            for bucket in self._all():
                capacity, refill = self._shape(bucket.per_minute)
                bucket.holding.remaining(now)
                bucket.holding.capacity, bucket.holding.refill_per_s = capacity, refill
                # What it holds came from local refills: the region is charged for it now.
                bucket.taken_unreported = bucket.holding.level
        for entry, (grant, level) in zip(batch.entries, reply.grants, strict=True):
            bucket = by_key.get(entry.redis_key)
            if bucket is None:
                continue
            bucket.region_level = level
            if batch.mode == SHARED and not changed:
                bucket.holding.add(grant, now)
        return changed

    def sync_failed(self, batch: SyncBatch, now: float, reason: str) -> bool:
        """The store could not be reached: restore the batch and hold local shares; True when the mode
        changed (to local-share)."""
        by_key = self._by_key()
        for entry in batch.entries:
            bucket = by_key.get(entry.redis_key)
            if bucket is None:
                continue
            bucket.holding.add(entry.returned, now)
            bucket.taken_unreported += entry.unreported
            bucket.provisional += entry.unreported_provisional
            bucket.demand += entry.demand
        self.reason = reason
        if self.mode == LOCAL_SHARE:
            return False
        self.mode = LOCAL_SHARE
        for bucket in self._all():
            capacity, refill = self._shape(bucket.per_minute)
            bucket.holding.remaining(now)
            bucket.holding.capacity, bucket.holding.refill_per_s = capacity, refill
            bucket.holding.level = min(bucket.holding.level, capacity)
            bucket.taken_unreported = bucket.provisional = 0.0
        return True

    def status(self) -> dict[str, object]:
        return {"mode": self.mode, "routers": self.routers, "reason": self.reason or None,
                "client_buckets": len(self._clients), "deployment_buckets": len(self._deployments)}
