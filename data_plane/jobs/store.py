"""Asynchronous jobs in Redis: the records, the region's queue, the leases and the due callbacks.

Every write is one call of `COMMIT_SCRIPT`, a compare-and-set on the record's version that also moves
the job between the region's indexes, so a record and its place in the queue never disagree and two
routers can never both move a job on. What the next state is comes from `job_state.apply`; this module
only reads, asks and writes. Every key expires (`result_ttl_s` after the job's last change).

Keys of region R: `meridian:jobs:R:<id>` (hash: version, state, request, result), `meridian:jobs:R:pending`
(list of queued ids, FIFO), `...:leases` and `...:callbacks` (sorted sets scored by the ms at which the
lease expires or the callback is due), `...:index` (sorted set of ids by creation, for listing).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from data_plane.jobs.state import CallbackStatus, Claim, JobState, JobStatus, apply, claimable
from data_plane.serving.request_shapes import body_model
from meridian_common.logging_setup import event
from meridian_common.redis_connection import redis_client

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^job_[0-9a-f]{32}$")

# KEYS: record, pending, leases, callbacks, index, and on a submit the client's queued set.
# ARGV: id, expected version ('' = the record must not exist), new version, pending op (push, remove, keep),
# lease score ('' = none), callback score ('' = none), ttl ms, max queued (0 = no check), index score
# ('' = leave), max queued for this client (0 = no check), the record key prefix, then field/value pairs of
# the record.
# Returns 1 when written, 0 when the version did not match, -1 when the region's queue is full, -2 when the
# client's is.
COMMIT_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[2] == '' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
local ttl = tonumber(ARGV[7])
local max_queued = tonumber(ARGV[8])
if ARGV[4] == 'push' and max_queued > 0 and redis.call('LLEN', KEYS[2]) >= max_queued then return -1 end
local client_max = tonumber(ARGV[10])
if ARGV[4] == 'push' and client_max > 0 then
  -- The client's set holds the ids it queued; those no longer queued (run, cancelled, expired) leave it.
  for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
    if redis.call('HGET', ARGV[11] .. id, 'queued') ~= '1' then redis.call('ZREM', KEYS[6], id) end
  end
  if redis.call('ZCARD', KEYS[6]) >= client_max then return -2 end
end
redis.call('HSET', KEYS[1], 'version', ARGV[3], unpack(ARGV, 12))
redis.call('PEXPIRE', KEYS[1], ttl)
if ARGV[4] == 'push' then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'queued', '1')
  if client_max > 0 then
    redis.call('ZADD', KEYS[6], ARGV[9], ARGV[1])
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
elseif ARGV[4] == 'remove' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  redis.call('HSET', KEYS[1], 'queued', '0')
end
if ARGV[5] == '' then redis.call('ZREM', KEYS[3], ARGV[1]) else redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1]) end
if ARGV[6] == '' then redis.call('ZREM', KEYS[4], ARGV[1]) else redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1]) end
if ARGV[9] ~= '' then
  -- Trimmed on every submit, so that the index never holds much more than the records still kept.
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[9]) - 2 * ttl)
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[1])
end
for i = 2, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""

REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_CLAIM_WINDOW = 16  # queued ids looked at per claim: a few not yet due must not block the rest
REPLICA_ACK_TIMEOUT_MS = 500


class JobsUnavailable(Exception):
    """Redis could not be reached or answered an error; the message says which, without the URL."""


class QueueFull(Exception):
    """The region's queue, or the client's share of it, is full; the message says which."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a job runs: the chat completion body (JSON, never streamed), the routing headers and the digest of
    the client's key (the key itself is never stored)."""

    endpoint: str
    body: bytes
    headers: dict[str, str]
    identity: str
    callback_url: str | None = None

    def as_json(self) -> bytes:
        return orjson.dumps({"endpoint": self.endpoint, "body": orjson.Fragment(self.body), "headers": self.headers,
                             "identity": self.identity, "callback_url": self.callback_url})

    @classmethod
    def from_json(cls, raw: bytes) -> JobRequest:
        stored = _STORED_REQUEST.decode(raw)
        return cls(stored.endpoint, bytes(stored.body), stored.headers, stored.identity, stored.callback_url)


class _StoredRequest(msgspec.Struct):
    """A JobRequest as Redis holds it; its body stays bytes (a job's body is read again only to be forwarded)."""

    endpoint: str
    body: msgspec.Raw
    headers: dict[str, str]
    identity: str
    callback_url: str | None = None


_STORED_REQUEST = msgspec.json.Decoder(_StoredRequest)


@dataclass(frozen=True, slots=True)
class JobResult:
    """The answer exactly as the synchronous endpoint would have sent it."""

    status_code: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class StoredJob:
    state: JobState
    request: JobRequest
    result: JobResult | None = None

    def document(self, *, include_result: bool = True) -> bytes:
        """The job as clients see it (`GET /v1/async/{id}`, and the callback's body)."""
        state, result = self.state, self.result
        document: dict[str, Any] = {
            "id": state.id,
            "object": "async.job",
            "status": str(state.status),
            "model": body_model(self.request.body),
            "created_at": state.created_ms // 1000,
            "updated_at": state.updated_ms // 1000,
            "attempts": state.attempts,
            "max_attempts": state.max_attempts,
            "owner": state.owner,
            "poll_url": f"/v1/async/{state.id}",
        }
        if self.request.callback_url is not None:
            document["callback"] = {"url": self.request.callback_url, "status": str(state.callback_status),
                                    "attempts": state.callback_attempts}
        document["error"] = _error(state, result)
        if include_result and result is not None:
            document["status_code"] = result.status_code
            document["response_headers"] = result.headers
            # The stored bytes go out as they are: the completion is exactly the synchronous one.
            document["result"] = orjson.Fragment(result.body) if state.status is JobStatus.SUCCEEDED else None
        return orjson.dumps(document)


def _error(state: JobState, result: JobResult | None) -> dict[str, Any] | None:
    """A failed job's error as the synchronous endpoint sent it, or why the router gave up on it."""
    if state.status is not JobStatus.FAILED:
        return None
    if result is not None:
        try:
            error = orjson.loads(result.body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if isinstance(error, dict):
            return error
    return {"message": state.error, "type": "api_error", "param": None, "code": state.error_code}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a state belongs in the region's indexes (pure: derived from the states before and after)."""

    pending: str
    lease_score: str
    callback_score: str


def placement(old: JobState | None, new: JobState) -> Placement:
    was_queued = old is not None and old.status is JobStatus.QUEUED
    is_queued = new.status is JobStatus.QUEUED
    pending = "push" if is_queued and not was_queued else "remove" if was_queued and not is_queued else "keep"
    lease = str(new.lease_until_ms) if new.status is JobStatus.RUNNING else ""
    callback = (str(new.callback_due_ms)
                if new.callback_status in (CallbackStatus.PENDING, CallbackStatus.DELIVERING) else "")
    return Placement(pending, lease, callback)


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def unavailable(error: BaseException) -> JobsUnavailable:
    return JobsUnavailable(f"the router cannot reach the job store (Redis): {type(error).__name__}")


class JobStore:
    def __init__(self, redis_url: str, region: str, *, result_ttl_s: float, max_queued: int,
                 max_queued_per_client: int = 0, socket_timeout_s: float = 1.0, replicated: bool = False) -> None:
        """`replicated`: Redis has replicas that a failover promotes (Sentinel); see `_replicated_submit`."""
        # One immediate retry only: it reconnects after a Redis restart, and a dead Redis answers a submit
        # with 503 at once instead of after redis-py's default backoff.
        self._client = redis_client(
            redis_url, socket_connect_timeout=0.25, socket_timeout=socket_timeout_s, retry=Retry(NoBackoff(), 1))
        self._commit = self._client.register_script(COMMIT_SCRIPT)
        self._prefix = f"meridian:jobs:{region}:"
        self._ttl_ms = int(result_ttl_s * 1000)
        self._max_queued = max_queued
        self._max_queued_per_client = max_queued_per_client
        self._replicated = replicated
        self._replica_expected = replicated
        self.region = region

    def key(self, job_id: str) -> str:
        return self._prefix + job_id

    @property
    def _keys(self) -> list[str]:
        return [self._prefix + name for name in ("pending", "leases", "callbacks", "index")]

    async def close(self) -> None:
        await self._client.aclose()

    async def _write(self, old: JobState | None, new: JobState, fields: dict[str, bytes], *,
                     submitted_by: str | None = None) -> int:
        """`submitted_by`: the client's identity on a submit, whose queue limits then apply."""
        where = placement(old, new)
        submit = submitted_by is not None
        args: list[Any] = [new.id, "" if old is None else str(old.version), str(new.version), where.pending,
                           where.lease_score, where.callback_score, self._ttl_ms,
                           self._max_queued if submit else 0, str(new.created_ms) if old is None else "",
                           self._max_queued_per_client if submit else 0, self._prefix]
        for name, value in {"state": orjson.dumps(new.as_dict()), **fields}.items():
            args += [name, value]
        keys = [self.key(new.id), *self._keys]
        if submit:
            keys.append(f"{self._prefix}queued:{submitted_by}")
        try:
            if submit and self._replicated:
                return await self._replicated_submit(new.id, keys, args)
            return int(await self._commit(keys=keys, args=args))
        except REDIS_ERRORS as error:
            raise unavailable(error) from error

    async def _replicated_submit(self, job_id: str, keys: list[str], args: list[Any]) -> int:
        """A submit that returns once a replica holds the job too, so that a failover cannot lose it; refused
        (and withdrawn) when a replica is connected but does not confirm in time. A primary left with no
        replica at all (the other one died with the old primary) keeps accepting, as a lone Redis does, and
        says so once: refusing every job until a replica returns would turn one lost server into an outage."""
        async with self._client.pipeline(transaction=False) as pipe:
            await self._commit(keys=keys, args=args, client=pipe)
            # WAIT counts the replicas holding this connection's writes: it must share the script's pipeline.
            if self._replica_expected:
                pipe.wait(1, REPLICA_ACK_TIMEOUT_MS)
            else:
                pipe.execute_command("ROLE")
            written, reply = await pipe.execute()
        if int(written) != 1:
            return int(written)
        if not self._replica_expected:
            self._replica_seen(_connected_replicas(reply))
            return 1
        if int(reply) >= 1:
            return 1
        replicas = _connected_replicas(await self._client.execute_command("ROLE"))
        self._replica_seen(replicas)
        if replicas == 0:
            return 1
        await self._withdraw(job_id)
        raise JobsUnavailable(f"no replica of the job store confirmed the job within {REPLICA_ACK_TIMEOUT_MS} ms: "
                              "a failover could lose it")

    def _replica_seen(self, replicas: int) -> None:
        expected = replicas > 0
        if expected != self._replica_expected:
            log.log(logging.INFO if expected else logging.WARNING,
                    event("job_store_replication", region=self.region, replicas=replicas,
                          effect="submits wait for a replica" if expected
                          else "submits accepted on the primary alone: a failover now could lose them"))
        self._replica_expected = expected

    async def _withdraw(self, job_id: str) -> None:
        """Takes back a submit that could not be replicated (best effort: the primary may be going)."""
        with contextlib.suppress(JobsUnavailable, *REDIS_ERRORS):
            await self._client.delete(self.key(job_id))
            await self._forget(job_id)

    async def submit(self, state: JobState, request: JobRequest) -> None:
        """Writes the record and queues it in one step; returns only once Redis holds both."""
        written = await self._write(None, state, {"request": request.as_json()}, submitted_by=request.identity)
        if written == -1:
            raise QueueFull(f"the region's job queue holds {self._max_queued} jobs already")
        if written == -2:
            raise QueueFull(f"this client has {self._max_queued_per_client} jobs queued already "
                            "(jobs.max_queued_per_client)")
        if written != 1:
            raise JobsUnavailable(f"job id {state.id} already exists")

    async def commit(self, old: JobState, new: JobState, result: JobResult | None = None) -> bool:
        """Writes `new` if the record is still at `old`'s version; False when someone wrote it first."""
        fields = {} if result is None else {"result": result.body,
                                            "result_meta": orjson.dumps({"status_code": result.status_code,
                                                                         "headers": result.headers})}
        return await self._write(old, new, fields) == 1

    async def load(self, job_id: str) -> StoredJob | None:
        try:
            raw = await self._client.hgetall(self.key(job_id))
        except REDIS_ERRORS as error:
            raise unavailable(error) from error
        return _stored(raw)

    async def load_states(self, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.key(job_id), "state")
                raw = await pipe.execute()
        except REDIS_ERRORS as error:
            raise unavailable(error) from error
        return {job_id: JobState.from_dict(orjson.loads(value)) for job_id, value in zip(job_ids, raw, strict=True)
                if value is not None}

    async def claim_next(self, router_id: str, lease_ms: int) -> StoredJob | None:
        """The first claimable job of the queue, now leased to `router_id`; None when there is none. Two
        routers reading the same head race on the version: one claims it, the other moves on."""
        try:
            ids = [_decode(v) for v in await self._client.lrange(self._keys[0], 0, _CLAIM_WINDOW - 1)]
        except REDIS_ERRORS as error:
            raise unavailable(error) from error
        for job_id in ids:
            job = await self.load(job_id)
            now = now_ms()
            if job is None:
                await self._forget(job_id)
                continue
            if not claimable(job.state, now):
                continue
            claimed = apply(job.state, Claim(router_id, lease_ms), now)
            if await self.commit(job.state, claimed):
                return StoredJob(claimed, job.request, job.result)
        return None

    async def _forget(self, job_id: str) -> None:
        """Drops the index entries of a record that expired."""
        pending, leases, callbacks, index = self._keys
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrem(pending, 0, job_id).zrem(leases, job_id).zrem(callbacks, job_id).zrem(index, job_id)
                await pipe.execute()
        except REDIS_ERRORS as error:
            raise unavailable(error) from error

    async def _due(self, key: str, now_ms: int, limit: int) -> list[str]:
        try:
            ids = await self._client.zrangebyscore(key, "-inf", now_ms, start=0, num=limit)
        except REDIS_ERRORS as error:
            raise unavailable(error) from error
        return [_decode(v) for v in ids]

    async def expired_leases(self, now_ms: int, limit: int) -> list[str]:
        return await self._due(self._keys[1], now_ms, limit)

    async def due_callbacks(self, now_ms: int, limit: int) -> list[str]:
        return await self._due(self._keys[2], now_ms, limit)

    async def load_or_forget(self, job_id: str) -> StoredJob | None:
        job = await self.load(job_id)
        if job is None:
            await self._forget(job_id)
        return job

    async def queue_length(self) -> int:
        try:
            return int(await self._client.llen(self._keys[0]))
        except REDIS_ERRORS as error:
            raise unavailable(error) from error

    async def recent(self, limit: int, status: JobStatus | None = None) -> list[JobState]:
        """The newest jobs first (at most `limit` looked at); index entries of expired records are dropped."""
        index = self._keys[3]
        try:
            ids = [_decode(v) for v in await self._client.zrevrange(index, 0, limit - 1)]
        except REDIS_ERRORS as error:
            raise unavailable(error) from error
        states = await self.load_states(ids)
        for job_id in ids:
            if job_id not in states:
                await self._forget(job_id)
        return [states[i] for i in ids if i in states and (status is None or states[i].status is status)]


def _connected_replicas(role: Any) -> int:
    """The replicas a primary's ROLE reply lists (`['master', offset, [[host, port, offset], ...]]`)."""
    return len(role[2]) if isinstance(role, list | tuple) and len(role) > 2 and role[0] in (b"master", "master") else 0


def _stored(raw: dict[bytes, bytes]) -> StoredJob | None:
    if not raw or b"state" not in raw or b"request" not in raw:
        return None
    state = JobState.from_dict(orjson.loads(raw[b"state"]))
    result = None
    if b"result_meta" in raw:
        meta = orjson.loads(raw[b"result_meta"])
        result = JobResult(int(meta["status_code"]), raw.get(b"result", b""), dict(meta["headers"]))
    return StoredJob(state, JobRequest.from_json(raw[b"request"]), result)


def now_ms() -> int:
    return int(time.time() * 1000)
