"""TLS on the control plane's links, with a throwaway CA made at test time: routers with the right client
certificate get their table over mutual TLS, a router with a certificate from another CA is refused, and
operators reach the admin API over https with the token; no secret reaches a log."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.control_plane_stack import http_json, meridian, wait_for
from fixtures.throwaway_ca import Pki
from meridian_common.service_process import ServiceProcess, start_service
from regions.local_services import RunningService

pytestmark = pytest.mark.integration

TOKEN = "tls-test-admin-token-91c2"
TOKEN_ENV = "MERIDIAN_TLS_TEST_TOKEN"


def _replica_config(workdir: Path, pki: Pki, etcd: RunningService, redis: RunningService) -> Path:
    document = {
        "etcd": {"endpoints": [etcd.url], "prefix": "/meridian-tls"},
        "redis_url": redis.url,
        "grpc": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0, "grpc_port": 0, "token_env": TOKEN_ENV},
        "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "ca_file": str(pki.ca),
                "require_client_cert": True},
        "lease_ttl_s": 2, "tick_s": 0.2,
        "regions": {"eu-west": {}},
        "models": {"m": {"deployments": [{"name": "sim", "url": "http://127.0.0.1:9/v1", "served_model": "m",
                                          "region": "eu-west"}]}},
    }
    path = workdir / "cp-tls.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _router_config(workdir: Path, name: str, grpc: str, pki: Pki, cert: Path, key: Path) -> Path:
    document = {"region": "eu-west", "router_id": name,
                "models": {"m": {"deployments": [{"name": "sim", "url": "http://127.0.0.1:9/v1",
                                                  "served_model": "m", "region": "eu-west"}]}},
                "control_plane": {"targets": [grpc], "ca_file": str(pki.ca), "cert_file": str(cert),
                                  "key_file": str(key)}}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory, pki: Pki, etcd: RunningService,
            redis_server: RunningService) -> Iterator[tuple[ServiceProcess, dict[str, Any], Path]]:
    workdir = tmp_path_factory.mktemp("tls")
    ports_file = workdir / "ports.json"
    service = start_service("cp-tls", [*meridian("control-plane", "--config", str(_replica_config(
        workdir, pki, etcd, redis_server)), "--replica-id", "cp-tls", "--ports-file", str(ports_file))],
        workdir, health_path=None, env={TOKEN_ENV: TOKEN})
    try:
        addresses = wait_for(lambda: ports_file.exists() and json.loads(ports_file.read_text())["addresses"],
                             "the replica's ports file")
        yield service, addresses, workdir
    finally:
        service.stop()


def _routing(router: ServiceProcess) -> dict[str, Any]:
    return http_json("GET", f"{router.url}/routing")[1]


def test_router_with_the_right_certificate_gets_its_table(replica: tuple[ServiceProcess, dict[str, Any], Path],
                                                         pki: Pki) -> None:
    _, addresses, workdir = replica
    router = start_service("router-good", meridian("router", "--config", str(_router_config(
        workdir, "router-good", addresses["grpc"], pki, pki.client_cert, pki.client_key)), "--port", "0"), workdir,
        health_path="/ready")
    try:
        table = wait_for(lambda: (t := _routing(router)["table"])["source"] == "control-plane" and t,
                         "a table over mutual TLS")
        assert table["version"] > 0
    finally:
        router.stop()


def test_router_with_a_foreign_certificate_is_refused(replica: tuple[ServiceProcess, dict[str, Any], Path],
                                                      pki: Pki) -> None:
    _, addresses, workdir = replica
    router = start_service("router-rogue", meridian("router", "--config", str(_router_config(
        workdir, "router-rogue", addresses["grpc"], pki, pki.rogue_cert, pki.rogue_key)), "--port", "0"), workdir,
        health_path="/ready")
    try:
        time.sleep(1.5)
        routing = _routing(router)
        assert routing["table"]["source"] == "config"  # still serving its bootstrap table
        assert routing["control_plane"]["link"] != "connected"
        log = router.log_path.read_text()
        assert "control_plane" in log or "unreachable" in log
        assert pki.rogue_key.read_text().splitlines()[1] not in log
    finally:
        router.stop()


def _status(admin: str, ca: Path, token_env: str, env_token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*meridian("status", "--json", "--admin", admin, "--ca-file", str(ca),
                                     "--token-env", token_env)],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": "/usr/bin:/bin", token_env: env_token})


def test_operators_reach_the_admin_api_over_https_with_the_token(
        replica: tuple[ServiceProcess, dict[str, Any], Path], pki: Pki) -> None:
    service, addresses, _ = replica
    admin = addresses["admin"]
    good = _status(admin, pki.ca, "OPERATOR_TOKEN", TOKEN)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["leader"]["id"] == "cp-tls"
    wrong = _status(admin, pki.ca, "OPERATOR_TOKEN", "not-the-token-5521")
    assert wrong.returncode != 0
    log = service.log_path.read_text()
    assert "not-the-token-5521" not in log and TOKEN not in log
    assert "refused" in log or "401" in log or "unauthorized" in log.lower()
