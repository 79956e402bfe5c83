"""A real router process subscribed to an in-process table stream: a table naming an environment variable the
router does not let tables name is NACKed with the reason and the table in force stays; one naming an allowed
variable is applied. Neither value reaches the router's log."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.distribution.server import start_distribution_server
from control_plane.distribution.table_cache import TableCache
from data_plane.config import RouterConfig, bootstrap_table
from meridian_common.service_process import ServiceProcess, start_service
from meridian_common.table_hash import content_hash
from meridian_proto import routing_pb2

pytestmark = pytest.mark.integration

SECRET = "router-private-value"
BACKEND_KEY = "backend-key-value"


def _routing(router: ServiceProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{router.url}/routing", timeout=5) as response:
        return dict(json.loads(response.read()))


def _table(config: RouterConfig, version: int, key_env: str) -> routing_pb2.RoutingTable:
    table = bootstrap_table(config)
    table.version, table.cluster_id, table.source = version, 0xC1, "control-plane"
    table.models[0].deployments[0].api_key_env = key_env
    table.content_hash = content_hash(table.models)
    return table


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):  # 10 s
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 10 s: {what}")


def test_a_table_naming_a_variable_outside_backend_keys_is_nacked(tmp_path: Path) -> None:
    async def scenario() -> None:
        cache = TableCache("cp-test")
        server, port = await start_distribution_server(cache, "127.0.0.1", 0, tls=None)
        router: ServiceProcess | None = None
        try:
            document = {
                "region": "eu-west", "router_id": "trust-1", "listen": {"host": "127.0.0.1", "port": 0},
                "control_plane": {"targets": [f"127.0.0.1:{port}"]},
                "models": {"m": {"deployments": [{"name": "d", "url": "http://127.0.0.1:9/v1", "served_model": "m",
                                                  "region": "eu-west"}]}},
            }
            config = RouterConfig.model_validate(document)
            (tmp_path / "router.yaml").write_text(json.dumps(document))
            router = await asyncio.to_thread(
                start_service, "router", [sys.executable, "-m", "meridian_cli.main", "router", "--config",
                                          str(tmp_path / "router.yaml")],
                tmp_path, health_path="/ready", env={"ROUTER_PRIVATE": SECRET, "MERIDIAN_BACKEND_D": BACKEND_KEY})
            running = router
            cache.set_table(_table(config, 5, "ROUTER_PRIVATE"))
            await _until(lambda: _routing(running)["control_plane"]["last_nack_version"] == 5, "the NACK of 5")
            routing = _routing(running)
            assert routing["control_plane"]["last_nack_reason"] == (
                "model 'm' deployment 'd': api_key_env 'ROUTER_PRIVATE' is not a variable this router lets a table "
                "name (allowed: MERIDIAN_BACKEND_*); give the variable an allowed name, or list it in the router "
                "config's backend_keys")
            assert (routing["table"]["version"], routing["table"]["source"]) == (0, "config")
            cache.set_table(_table(config, 6, "MERIDIAN_BACKEND_D"))
            await _until(lambda: _routing(running)["table"]["version"] == 6, "table 6 applied")
            deployment = _routing(running)["models"]["m"]["deployments"][0]
            assert deployment["api_key_env"] == "MERIDIAN_BACKEND_D"
            assert SECRET not in running.log_path.read_text() and BACKEND_KEY not in running.log_path.read_text()
        finally:
            if router is not None:
                await asyncio.to_thread(router.stop)
            await server.stop(0)

    asyncio.run(asyncio.wait_for(scenario(), 60))
