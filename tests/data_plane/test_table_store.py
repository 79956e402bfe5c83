"""The on-disk copy of the last good table: atomic replacement, and damaged files ignored, never fatal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from data_plane.table.store import TableStore
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2


def make_table(version: int, model: str = "m") -> routing_pb2.RoutingTable:
    models = [routing_pb2.ModelRoute(model=model, policy="latency-first",
                                     deployments=[routing_pb2.Deployment(name="d", url="http://x/v1")])]
    return routing_pb2.RoutingTable(version=version, epoch=3, region="eu", content_hash=content_hash(models),
                                    models=models, source="control-plane", computed_at_unix_ms=1_700_000_000)


def test_round_trip_marks_the_source_as_disk(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "state" / "table.bin")
    table = make_table(42)
    store.save(table)
    loaded = store.load()
    assert loaded is not None
    assert loaded.source == "disk"
    loaded.source = table.source
    assert loaded == table


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert TableStore(tmp_path / "absent.bin").load() is None


def test_save_replaces_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = TableStore(tmp_path / "table.bin")
    store.save(make_table(1))
    store.save(make_table(2, model="other"))
    loaded = store.load()
    assert loaded is not None and loaded.version == 2
    assert [p.name for p in tmp_path.iterdir()] == ["table.bin"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"\xff\xff\xff\xff garbage",
        lambda data: data[: len(data) // 2],
        lambda data: data[:-3] + bytes(b ^ 0x01 for b in data[-3:]),
        lambda data: b"",
    ],
    ids=["garbage", "truncated", "bit-flips", "empty"],
)
def test_damaged_file_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    store = TableStore(tmp_path / "table.bin")
    store.save(make_table(7))
    store.path.write_bytes(damage(store.path.read_bytes()))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="data_plane.table.store"):
        assert store.load() is None
    assert "table_store_corrupt" in caplog.text


def test_unreadable_path_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "table.bin").mkdir()
    with caplog.at_level(logging.WARNING, logger="data_plane.table.store"):
        assert TableStore(tmp_path / "table.bin").load() is None
    assert "table_store_unreadable" in caplog.text


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TableStore(tmp_path / "table.bin")
    store.save(make_table(1))

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(make_table(2, model="other"))
    monkeypatch.undo()
    loaded = store.load()
    assert loaded is not None and loaded.version == 1
    assert [p.name for p in tmp_path.iterdir()] == ["table.bin"]
