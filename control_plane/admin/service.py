"""The admin operations, whatever the transport (admin_grpc.py, admin_http.py): apply a policy document, set
one field, show, history, rollback, dry run, status. A document is validated against the catalog before
anything is written, so a refused one leaves the policy in force untouched; a dry run computes the tables
the current and the proposed document would give, on the same inputs, and returns their diff.
"""

from __future__ import annotations

import enum
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import yaml

from control_plane.config import ControlPlaneConfig
from control_plane.distribution.table_cache import TableCache
from control_plane.policy.document import (
    PolicyError,
    merge_model_policy,
    parse_policy_document,
    policy_diff,
    policy_to_yaml,
    set_field,
    validate_policy_document,
)
from control_plane.policy.store import PolicyConflict, PolicyStore, UnknownPolicyVersion
from control_plane.tables.compute import ComputeState, compute_tables
from control_plane.tables.diff import table_diff
from meridian_proto import policy_pb2

SET_RETRIES = 3
DEFAULT_AUTHOR = "admin"


class ErrorKind(enum.Enum):
    INVALID = "invalid_policy"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    UNAUTHORIZED = "unauthorized"


class AdminError(Exception):
    def __init__(self, kind: ErrorKind, message: str, problems: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.message = message
        self.problems = problems
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    document: policy_pb2.PolicyDocument
    applied: bool
    table_diff: str
    policy_diff: str


def token_matches(provided: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no configured token refuses everyone."""
    if not provided or not expected:
        return False
    return hmac.compare_digest(provided.encode(), expected.encode())


def bearer_of(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def document_json(document: policy_pb2.PolicyDocument) -> dict[str, Any]:
    text = policy_to_yaml(document)
    return {"version": document.version, "author": document.author,
            "applied_at_unix_ms": document.applied_at_unix_ms, "comment": document.comment,
            "models": (yaml.safe_load(text) or {}).get("models", []), "yaml": text}


T = TypeVar("T")
Edit = Callable[[policy_pb2.PolicyDocument], policy_pb2.PolicyDocument]
StatusSource = Callable[[], Awaitable[dict[str, Any]]]


class AdminService:
    def __init__(
        self,
        config: ControlPlaneConfig,
        store: PolicyStore,
        cache: TableCache,
        status: StatusSource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._cache = cache
        self._status = status
        self._clock = clock

    async def apply(self, text: str, *, dry_run: bool, author: str = "") -> PolicyResult:
        try:
            proposed = parse_policy_document(text, self._config)
        except PolicyError as error:
            raise AdminError(ErrorKind.INVALID, "policy document refused", error.problems) from error
        return await self._change(lambda _current: proposed, dry_run=dry_run, author=author, retries=1)

    async def set_fields(
        self, region: str, model: str, changes: Mapping[str, Any], *, dry_run: bool, author: str = ""
    ) -> PolicyResult:
        if not changes:
            raise AdminError(ErrorKind.INVALID, "nothing to set", (f"{region}/{model}: give at least one field",))

        def edit(current: policy_pb2.PolicyDocument) -> policy_pb2.PolicyDocument:
            return set_field(current, region, model, self._config, **changes)

        return await self._change(edit, dry_run=dry_run, author=author, retries=SET_RETRIES)

    async def merge(self, changes: policy_pb2.ModelPolicy, *, dry_run: bool, author: str = "") -> PolicyResult:
        return await self._change(lambda current: merge_model_policy(current, changes, self._config),
                                  dry_run=dry_run, author=author, retries=SET_RETRIES)

    async def show(self) -> policy_pb2.PolicyDocument:
        return await self._etcd(self._store.current())

    async def history(self, limit: int = 0) -> list[policy_pb2.PolicyDocument]:
        return await self._etcd(self._store.history(limit))

    async def rollback(self, version: int, *, dry_run: bool = False, author: str = "") -> PolicyResult:
        try:
            old = await self._etcd(self._store.get(version))
        except UnknownPolicyVersion as error:
            raise AdminError(ErrorKind.NOT_FOUND, str(error)) from error
        comment = f"rollback to version {version}" + (f": {old.comment}" if old.comment else "")

        def edit(_current: policy_pb2.PolicyDocument) -> policy_pb2.PolicyDocument:
            document = policy_pb2.PolicyDocument(models=old.models, comment=comment)
            validate_policy_document(document, self._config)
            return document

        return await self._change(edit, dry_run=dry_run, author=author, retries=1)

    async def status(self) -> dict[str, Any]:
        return await self._status()

    async def _change(self, edit: Edit, *, dry_run: bool, author: str, retries: int) -> PolicyResult:
        for attempt in range(1, retries + 1):
            current = await self._etcd(self._store.current())
            try:
                proposed = edit(current)
            except PolicyError as error:
                raise AdminError(ErrorKind.INVALID, "policy document refused", error.problems) from error
            if dry_run:
                return PolicyResult(proposed, False, self.preview(current, proposed),
                                    policy_diff(current, proposed))
            try:
                written = await self._etcd(self._store.write(
                    proposed, previous=current, author=author or DEFAULT_AUTHOR,
                    now_unix_ms=round(self._clock() * 1000)))
            except PolicyConflict as error:
                if attempt == retries:
                    raise AdminError(ErrorKind.CONFLICT, str(error)) from error
                continue
            return PolicyResult(written, True, "", policy_diff(current, written))
        raise AssertionError("unreachable")

    def preview(self, current: policy_pb2.PolicyDocument, proposed: policy_pb2.PolicyDocument) -> str:
        """The diff of the tables the two documents give on the same inputs: the served tables' weights and
        health, and no new telemetry. Only the policy differs, so only its effect shows."""
        now = self._clock()
        served = {region: table for region in self._cache.regions() if (table := self._cache.get(region))}
        state = ComputeState.from_tables(served, now)
        before, _ = compute_tables(self._config, current, {}, state, now)
        after, _ = compute_tables(self._config, proposed, {}, state, now)
        return table_diff(before, after)

    async def _etcd(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (aetcd.ClientError, TimeoutError, OSError) as error:
            raise AdminError(ErrorKind.UNAVAILABLE,
                             f"etcd unreachable ({type(error).__name__}): policies cannot be read or "
                             "written; the tables in force keep being served") from error
