"""Who a client is and what it may see, end to end: a router told to check client keys refuses to start without
them, per-client limits hold against made-up tokens, cached answers are kept per client and only for models
that opted in, and the operator endpoints can be put behind the admin token. Answers are a few tokens on
purpose: identity is decided per request, whatever its size."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from meridian_common.service_process import ServiceProcess
from tests.data_plane.conftest import StartRouter, StartSimulator, deployment_yaml, meridian

pytestmark = pytest.mark.integration

KEYS = {"IDENTITY_CLIENT_KEYS": "key-alpha,key-beta"}


def _config(sim: str, *, keys_env: str | None) -> str:
    keys = f"client_api_keys_env: {keys_env}\n" if keys_env else ""
    return f"""region: identity
listen: {{host: 127.0.0.1, port: 0}}
{keys}health_check: {{interval_s: 5}}
models:
  limited:
    client_limits: {{rpm: 3}}
    deployments:
{deployment_yaml("a", sim, model="m")}
  cached:
    cache: {{enabled: true}}
    deployments:
{deployment_yaml("b", sim, model="m")}
  uncached:
    deployments:
{deployment_yaml("c", sim, model="m")}
"""


def _chat(router: ServiceProcess, model: str, token: str, headers: dict[str, str] | None = None,
          **fields: Any) -> tuple[int, dict[str, str]]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2, **fields}
    request = urllib.request.Request(f"{router.url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, {k.lower(): v for k, v in error.headers.items()}


@pytest.fixture(scope="module")
def sim_url(start_simulator: StartSimulator) -> str:
    return start_simulator("identity-sim", "--model", "m", "--ttft-ms", "0", "--itl-ms", "0",
                           "--output-tokens", "2").url


def test_a_router_told_to_check_keys_refuses_to_start_without_them(workdir: Path, sim_url: str) -> None:
    config = workdir / "no-keys.yaml"
    config.write_text(_config(sim_url, keys_env="IDENTITY_UNSET_KEYS"))
    for env_value in (None, "", " , "):
        env = {k: v for k, v in os.environ.items() if k != "IDENTITY_UNSET_KEYS"}
        if env_value is not None:
            env["IDENTITY_UNSET_KEYS"] = env_value
        result = subprocess.run(meridian("router", "--config", str(config), "--port", "0"), env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert "client_api_keys_env: names IDENTITY_UNSET_KEYS, which is unset or holds no key" in result.stderr


def test_made_up_tokens_buy_no_fresh_quota(start_router: StartRouter, sim_url: str) -> None:
    router = start_router("identity-open", _config(sim_url, keys_env=None))
    statuses = [_chat(router, "limited", secrets.token_hex(8))[0] for _ in range(10)]
    assert statuses.count(200) == 3 and statuses.count(429) == 7, statuses


def test_limits_follow_the_key_a_client_proved_it_holds(start_router: StartRouter, sim_url: str) -> None:
    router = start_router("identity-keyed", _config(sim_url, keys_env="IDENTITY_CLIENT_KEYS"), env=KEYS)
    assert _chat(router, "limited", "not-a-key")[0] == 401
    alpha = [_chat(router, "limited", "key-alpha")[0] for _ in range(4)]
    assert alpha == [200, 200, 200, 429]
    assert _chat(router, "limited", "key-beta")[0] == 200, "another client has its own quota"


def test_cached_answers_are_kept_per_client_and_only_where_the_model_opted_in(start_router: StartRouter,
                                                                              sim_url: str) -> None:
    router = start_router("identity-cache", _config(sim_url, keys_env="IDENTITY_CLIENT_KEYS"), env=KEYS)
    assert _chat(router, "cached", "key-alpha", temperature=0)[1]["x-meridian-cache"] == "miss"
    assert _chat(router, "cached", "key-alpha", temperature=0)[1]["x-meridian-cache"] == "hit"
    assert _chat(router, "cached", "key-beta", temperature=0)[1]["x-meridian-cache"] == "miss", \
        "a hit would tell beta what alpha asked"
    status, headers = _chat(router, "uncached", "key-alpha", temperature=0, headers={"x-meridian-cache": "on"})
    assert status == 200 and "x-meridian-cache" not in headers, "a client cannot turn caching on"


def _get(router: ServiceProcess, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{router.url}{path}", headers=headers),
                                    timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def test_operator_endpoints_can_require_the_admin_token(start_router: StartRouter, sim_url: str) -> None:
    config = _config(sim_url, keys_env=None) + "admin_token_env: IDENTITY_ADMIN_TOKEN\nops_auth: true\n"
    router = start_router("identity-ops", config, env={"IDENTITY_ADMIN_TOKEN": "ops-secret"})
    for path in ("/routing", "/metrics"):
        assert _get(router, path) == 401
        assert _get(router, path, "wrong") == 401
        assert _get(router, path, "ops-secret") == 200
    assert _get(router, "/health") == 200 and _get(router, "/ready") == 200, "probes stay open"
