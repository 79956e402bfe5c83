"""The log throttle: one line per kind per interval, the rest counted and reported with the next one."""

from __future__ import annotations

import pytest

from data_plane.log_throttle import LogThrottle


@pytest.mark.parametrize(("interval_s", "lines", "expected"), [
    pytest.param(10.0, [("TypeError", 0.0)], [0], id="the first line of a kind goes through"),
    pytest.param(10.0, [("TypeError", 0.0), ("TypeError", 1.0), ("TypeError", 9.9), ("TypeError", 10.0)],
                 [0, None, None, 2], id="within the interval held back, then reported with the next"),
    pytest.param(10.0, [("TypeError", 0.0), ("KeyError", 1.0), ("TypeError", 2.0), ("KeyError", 3.0)],
                 [0, 0, None, None], id="each kind has its own interval"),
    pytest.param(10.0, [("TypeError", 0.0), ("TypeError", 5.0), ("TypeError", 10.0), ("TypeError", 20.0)],
                 [0, None, 1, 0], id="the count starts again after each line logged"),
    pytest.param(10.0, [("TypeError", 0.0), ("TypeError", 15.0), ("TypeError", 20.0), ("TypeError", 25.0)],
                 [0, 0, None, 1], id="the interval runs from the last line logged"),
    pytest.param(0.0, [("TypeError", 0.0), ("TypeError", 0.0)], [0, 0], id="no interval: every line"),
])
def test_admit(interval_s: float, lines: list[tuple[str, float]], expected: list[int | None]) -> None:
    throttle = LogThrottle(interval_s)
    assert [throttle.admit(kind, now) for kind, now in lines] == expected


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        LogThrottle(-1.0)
