"""Creates the planned Toxiproxy proxies (and their latency toxics) through Toxiproxy's HTTP API.

Each proxy listens on a free port of 127.0.0.1 (`listen: 127.0.0.1:0`); both the real Toxiproxy and ours
report the bound address back, and that address is what the configs point at.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from meridian_common.logging_setup import event
from regions.stack_config import LOOPBACK, ProxySpec

log = logging.getLogger(__name__)

API_TIMEOUT_S = 5.0


class ProxySetupError(RuntimeError):
    """Toxiproxy refused or did not answer; the message names the proxy and Toxiproxy's error."""


def _call(api_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{api_url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "User-Agent": "meridian-up"},
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise ProxySetupError(f"toxiproxy {method} {path}: HTTP {error.code} {detail}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ProxySetupError(f"toxiproxy {method} {path}: {error}") from error
    return json.loads(payload) if payload else None


def create_proxy(api_url: str, spec: ProxySpec) -> str:
    """Creates `spec` with its toxics and returns the address it listens on (`127.0.0.1:port`)."""
    created = _call(api_url, "POST", "/proxies",
                    {"name": spec.name, "listen": f"{LOOPBACK}:0", "upstream": spec.upstream, "enabled": True})
    listen = str(created["listen"])
    if listen.endswith(":0"):
        raise ProxySetupError(f"toxiproxy did not report the port of proxy {spec.name} (listen {listen})")
    for toxic in spec.toxics():
        _call(api_url, "POST", f"/proxies/{spec.name}/toxics", toxic)
    log.info(event("proxy_created", proxy=spec.name, listen=listen, upstream=spec.upstream, kind=spec.kind,
                   latency_up_ms=spec.latency_upstream_ms, latency_down_ms=spec.latency_downstream_ms))
    return listen


def create_proxies(api_url: str, specs: Iterable[ProxySpec]) -> dict[str, str]:
    """name -> listen address of every proxy of `specs`, created in order."""
    return {spec.name: create_proxy(api_url, spec) for spec in specs}
