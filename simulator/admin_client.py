"""A blocking client for a simulator's `/sim/config`: read its settings and live counts, change them.
Blocking on purpose, for tests and launchers; inside a coroutine, run it in a thread."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class SimulatorAdminError(RuntimeError):
    """The simulator refused the change (its message says which field and why) or could not be reached."""


def _call(url: str, body: bytes | None, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        try:
            detail = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise SimulatorAdminError(f"{url}: HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise SimulatorAdminError(f"{url}: {error}") from None


def read_sim_config(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Settings plus `running`, `waiting`, `streaming`, `peak_running`, `served`, `errors`, `rejected`, `cancelled`
    and the engine figures (`kv_cache_usage`, `kv_cache_reserved_tokens`, `prefix_cache_hits`, ...).
    `url` is the simulator's root (`http://127.0.0.1:PORT`), not its `/v1` base."""
    return _call(f"{url}/sim/config", None, timeout_s)


def change_sim_config(url: str, timeout_s: float = 5.0, **changes: Any) -> dict[str, Any]:
    """Applies some of error_rate, throttle_rate, retry_after_s, ttft_ms, itl_ms, capacity, profile,
    prefill_ms_per_1k, kv_cache_tokens, prefix_cache_blocks (all of them or, if one is invalid, none) and
    returns the new view."""
    return _call(f"{url}/sim/config", json.dumps(changes).encode(), timeout_s)
