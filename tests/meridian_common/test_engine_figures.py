"""The engine figures both planes share: their bounds, their proto round trip, and the queue's expected wait."""

from __future__ import annotations

import pytest

from meridian_common.engine_figures import EngineFigures, InvalidEngineFigures, queue_wait_ms


@pytest.mark.parametrize(("waiting", "running", "service_ms", "wait_ms"), [
    (0, 4, 1000.0, 0.0),
    (8, 4, 1000.0, 2000.0),  # 8 ahead, served 4 at a time, 1 s each
    (2, 4, 1000.0, 500.0),
    (3, 0, 1000.0, 3000.0),  # nothing running (a full KV cache): one at a time
])
def test_queue_wait(waiting: float, running: float, service_ms: float, wait_ms: float) -> None:
    assert queue_wait_ms(waiting, running, service_ms) == pytest.approx(wait_ms)


@pytest.mark.parametrize("fields", [{"requests_waiting": -1.0}, {"kv_cache_usage": 1.5},
                                    {"prefix_cache_hit_rate": float("nan")}, {"generation_tokens_per_s": float("inf")}])
def test_impossible_engine_figures_are_refused(fields: dict[str, float]) -> None:
    values: dict[str, float] = {"requests_running": 1.0, "requests_waiting": 0.0, **fields}
    with pytest.raises(InvalidEngineFigures, match=next(iter(fields))):
        EngineFigures(**values)  # type: ignore[arg-type]


def test_engine_figures_survive_the_proto() -> None:
    figures = EngineFigures(2.0, 3.0, kv_cache_usage=0.5, generation_tokens_per_s=120.0, observed_at_unix_ms=7)
    assert EngineFigures.from_proto(figures.to_proto()) == figures
    assert EngineFigures.from_proto(EngineFigures(1.0, 0.0).to_proto()).kv_cache_usage is None
