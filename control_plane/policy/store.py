"""The policy documents in etcd: the one in force, its history, optimistic writes and rollbacks.

Any replica may write (operators may reach any of them); the leader picks a new document up through its
watch. A write is one transaction that checks the current key's mod_revision is still the one the writer
read, so two operators cannot clobber each other: the second gets PolicyConflict and nothing is written.
The same transaction moves the superseded document to `policy/history/<its revision>`, so the history has
no gap even if a replica dies mid-way, and deletes the versions beyond the newest `versions_kept`, so that
etcd does not grow with every push. Validation is the caller's job and happens before `write`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aetcd
from aetcd import EventKind

from control_plane.etcd_client import EtcdClient
from control_plane.etcd_keys import EtcdKeys, decode_policy
from meridian_proto import policy_pb2


class PolicyConflict(RuntimeError):
    """The policy in force changed between the read and the write; nothing was written."""

    def __init__(self, expected_version: int, found_version: int) -> None:
        self.expected_version = expected_version
        self.found_version = found_version
        super().__init__(f"the policy in force changed while this change was prepared (expected version "
                         f"{expected_version}, found {found_version}); read it again and retry")


class UnknownPolicyVersion(LookupError):
    def __init__(self, version: int, known: list[int]) -> None:
        self.version = version
        shown = ", ".join(str(v) for v in known[:10]) or "none"
        super().__init__(f"no policy version {version}; known versions (newest first): {shown}")


def _stamped(document: policy_pb2.PolicyDocument, author: str, now_unix_ms: int) -> bytes:
    stored = policy_pb2.PolicyDocument()
    stored.CopyFrom(document)
    stored.version = 0
    stored.author = author
    stored.applied_at_unix_ms = now_unix_ms
    return stored.SerializeToString(deterministic=True)


class PolicyStore:
    """`versions_kept` counts the document in force: 100 keeps it and the 99 it superseded last."""

    def __init__(self, client: EtcdClient, keys: EtcdKeys, *, versions_kept: int) -> None:
        if versions_kept < 1:
            raise ValueError(f"versions_kept must be >= 1 (the document in force), got {versions_kept}")
        self._client = client
        self._keys = keys
        self._versions_kept = versions_kept

    async def current(self) -> policy_pb2.PolicyDocument:
        """The document in force with its version; an empty document with version 0 when none was pushed."""
        document, _ = await self._current_at()
        return document

    async def _current_at(self) -> tuple[policy_pb2.PolicyDocument, int]:
        key = self._keys.policy_current
        # get_range keeps the header revision, which observe() needs to watch without a gap.
        found = await self._client.get_range(key, key + b"\0")
        revision = int(found.header.revision)
        if not found:
            return policy_pb2.PolicyDocument(), revision
        kv = found[0]
        return decode_policy(kv.value, int(kv.mod_revision)), revision

    async def history(self, limit: int = 0) -> list[policy_pb2.PolicyDocument]:
        """Every version, newest first (the one in force first); `limit` 0 means all."""
        current = await self.current()
        documents = [current] if current.version else []
        found = await self._client.get_prefix(self._keys.policy_history, sort_order="descend", sort_target="key")
        for kv in found:
            documents.append(decode_policy(kv.value, self._keys.revision_of(kv.key)))
        return documents[:limit] if limit else documents

    async def get(self, version: int) -> policy_pb2.PolicyDocument:
        current = await self.current()
        if version and current.version == version:
            return current
        stored = await self._client.get(self._keys.policy_version(version)) if version else None
        if stored is None:
            raise UnknownPolicyVersion(version, [d.version for d in await self.history(limit=10)])
        return decode_policy(stored.value, version)

    async def write(
        self, document: policy_pb2.PolicyDocument, *, previous: policy_pb2.PolicyDocument, author: str,
        now_unix_ms: int,
    ) -> policy_pb2.PolicyDocument:
        """Puts `document` in force if `previous` (as read) still is; returns it with its new version."""
        tx = self._client.transactions
        key = self._keys.policy_current
        success = [tx.put(key, _stamped(document, author, now_unix_ms))]
        older_kept = self._versions_kept - 1  # history entries once this write is done
        if previous.version and older_kept:
            success.append(tx.put(self._keys.policy_version(previous.version),
                                  previous.SerializeToString(deterministic=True)))
            older_kept -= 1
        # Read before the transaction: only a policy write changes the history, and a concurrent one fails
        # the compare below, so the history read here is the one this transaction prunes.
        history = await self._client.get_prefix(self._keys.policy_history, sort_order="descend", keys_only=True)
        if len(history) > older_kept:
            newest_dropped = history[older_kept].key
            success.append(tx.delete(self._keys.policy_history, range_end=newest_dropped + b"\0"))
        succeeded, responses = await self._client.transaction(
            compare=[tx.mod(key) == previous.version],
            success=[*success, tx.get(key)],
            failure=[tx.get(key)],
        )
        held = responses[-1] if responses else []
        current = held[0][1] if held else None
        if not succeeded:
            raise PolicyConflict(previous.version, int(current.mod_revision) if current is not None else 0)
        assert current is not None
        return decode_policy(current.value, int(current.mod_revision))

    async def rollback(self, version: int, *, author: str, now_unix_ms: int) -> policy_pb2.PolicyDocument:
        """Puts an earlier version back in force as a new version (history only grows)."""
        previous = await self.current()
        old = await self.get(version)
        document = policy_pb2.PolicyDocument(models=old.models, comment=f"rollback to version {version}"
                                             + (f": {old.comment}" if old.comment else ""))
        return await self.write(document, previous=previous, author=author, now_unix_ms=now_unix_ms)

    async def observe(self) -> AsyncIterator[policy_pb2.PolicyDocument]:
        """The document in force, then each new one as it is written. Use under contextlib.aclosing; a broken
        watch raises an aetcd ClientError."""
        document, revision = await self._current_at()
        yield document
        watch = await self._client.watch(self._keys.policy_current, start_revision=revision + 1,
                                         kind=EventKind.PUT)
        try:
            async for change in watch:
                yield decode_policy(change.kv.value, int(change.kv.mod_revision))
        finally:
            with contextlib.suppress(aetcd.ClientError):
                await watch.cancel()
