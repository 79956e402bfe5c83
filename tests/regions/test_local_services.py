"""Real etcd and Redis processes: ready when returned, gone (and reaped) when stopped or killed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from fixtures.services import wait_for_etcd_quorum
from meridian_common.service_process import ServiceStartError
from regions import local_services
from regions.local_services import EtcdMember, RunningService, restart_etcd_member, start_etcd, start_redis


def assert_gone(pid: int) -> None:
    """Not running and not a zombie: reaped by us, so the pid no longer names any process of ours."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    assert not Path(f"/proc/{pid}").exists() or _state(pid) not in {"R", "S", "D", "Z"}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def redis_ping(url: str) -> bool:
    async def ping() -> bool:
        client = aioredis.Redis.from_url(url, socket_timeout=2)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    return asyncio.run(ping())


def redis_config(url: str, name: str) -> str:
    async def read() -> str:
        client = aioredis.Redis.from_url(url, socket_timeout=2, decode_responses=True)
        try:
            return str((await client.config_get(name))[name])
        finally:
            await client.aclose()

    return asyncio.run(read())


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_etcd_starts_healthy_and_stops_cleanly(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path / "data", tmp_path / "etcd.log")
    try:
        assert etcd.host == "127.0.0.1" and etcd.url == f"http://127.0.0.1:{etcd.port}"
        with urllib.request.urlopen(etcd.url + "/health", timeout=2) as response:
            assert json.loads(response.read())["health"] == "true"
        assert (tmp_path / "data" / "etcd" / "member").is_dir()
    finally:
        etcd.stop()
    assert not etcd.alive()
    assert_gone(etcd.pid)
    etcd.stop()  # a second stop is harmless


def test_two_etcds_get_distinct_ports(tmp_path: Path) -> None:
    first = start_etcd(tmp_path / "one", tmp_path / "one.log")
    try:
        second = start_etcd(tmp_path / "two", tmp_path / "two.log")
        try:
            assert first.port != second.port
        finally:
            second.kill()
        assert_gone(second.pid)
    finally:
        first.stop()
    assert_gone(first.pid)


def test_redis_answers_and_restarts_on_the_same_port(tmp_path: Path) -> None:
    first = start_redis(tmp_path / "data", tmp_path / "redis.log")
    try:
        assert first.url == f"redis://127.0.0.1:{first.port}/0"
        assert redis_ping(first.url)
        assert (redis_config(first.url, "save"), redis_config(first.url, "appendonly")) == ("", "no")
        assert redis_config(first.url, "bind") == "127.0.0.1"
    finally:
        first.kill()
    assert_gone(first.pid)
    assert not list((tmp_path / "data").glob("*.rdb")), "persistence must be off"
    second = start_redis(tmp_path / "data", tmp_path / "redis.log", port=first.port)
    try:
        assert second.url == first.url and redis_ping(second.url)
    finally:
        second.stop()
    assert_gone(second.pid)


def test_the_shared_fixtures_serve(etcd: RunningService, redis_server: RunningService) -> None:
    assert etcd.alive() and redis_server.alive()
    assert redis_ping(redis_server.url)


def test_redis_on_a_taken_port_fails_clearly(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(ServiceStartError, match="(?i)address already in use"):
        start_redis(tmp_path / "data", tmp_path / "redis.log", port=taken_port)


def test_etcd_retries_when_it_loses_the_port_race(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = local_services._free_ports
    picks = iter([[(taken_port, real(2)[0][1])]])
    monkeypatch.setattr(local_services, "_free_ports", lambda count: next(picks, None) or real(count))
    etcd = start_etcd(tmp_path / "data", tmp_path / "etcd.log")
    try:
        assert etcd.port != taken_port
        assert "address already in use" in (tmp_path / "etcd.log").read_text().lower()
    finally:
        etcd.stop()
    assert_gone(etcd.pid)


def test_a_three_member_cluster_survives_a_member_and_takes_it_back(
    etcd_cluster: list[tuple[EtcdMember, RunningService]], tmp_path: Path
) -> None:
    members = [member for member, _ in etcd_cluster]
    assert len({m.client_url for m in members} | {m.peer_url for m in members}) == 6
    assert all(local_services.etcd_healthy(m.client_url) for m in members)
    first, service = etcd_cluster[0]
    service.kill()
    assert_gone(service.pid)
    wait_for_etcd_quorum([m.client_url for m in members[1:]])  # two of three keep a quorum
    restarted = restart_etcd_member(first, members, tmp_path / "etcd-logs" / "etcd-1.log")
    etcd_cluster[0] = (first, restarted)
    assert local_services.etcd_healthy(first.client_url)
