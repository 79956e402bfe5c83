"""The last good routing table on disk, so that a router restarted while the control plane is down still
routes from what it last applied. Writes are atomic (temp file, fsync, rename); a damaged file is ignored.

File format: a magic line, the sha256 of the payload in hex and a newline, then the serialised RoutingTable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

from google.protobuf.message import DecodeError

from meridian_common.logging_setup import event
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

log = logging.getLogger(__name__)

MAGIC = b"MERIDIAN-ROUTING-TABLE-1\n"
_DIGEST_HEX_LEN = 64


class TableStore:
    """Blocking file I/O: call `save` through `asyncio.to_thread` from a coroutine."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, table: routing_pb2.RoutingTable) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = table.SerializeToString(deterministic=True)
        data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
        fd, temp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        self._fsync_directory()

    def load(self) -> routing_pb2.RoutingTable | None:
        """The stored table with `source="disk"`, or None when there is none or it cannot be trusted."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning(event("table_store_unreadable", path=self.path, error=error))
            return None
        try:
            table = _decode(data)
        except ValueError as error:
            log.warning(event("table_store_corrupt", path=self.path, error=error))
            return None
        table.source = "disk"
        return table

    def _fsync_directory(self) -> None:
        # Makes the rename itself durable; not every platform can open a directory.
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _decode(data: bytes) -> routing_pb2.RoutingTable:
    # A flipped bit in `version` would make the router refuse every later table: the whole payload is checked.
    if not data.startswith(MAGIC):
        raise ValueError("not a stored routing table (bad magic)")
    header_end = len(MAGIC) + _DIGEST_HEX_LEN
    digest, payload = data[len(MAGIC):header_end], data[header_end + 1:]
    if data[header_end:header_end + 1] != b"\n" or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch")
    table = routing_pb2.RoutingTable()
    try:
        table.ParseFromString(payload)
    except DecodeError as error:
        raise ValueError(f"undecodable table: {error}") from error
    if not table.region or table.content_hash != content_hash(table.models):
        raise ValueError("table without region or with a content hash that does not match its models")
    return table
