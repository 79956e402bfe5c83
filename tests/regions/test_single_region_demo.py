"""`meridian demo` runs green: traffic under every phase's policy, a backend failure with no client error."""

from __future__ import annotations

import pytest

from regions.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_with_no_client_error() -> None:
    lines: list[str] = []
    assert run_demo(requests_per_phase=16, say=lines.append) == 0
    output = "\n".join(lines)
    assert "linear-c=open" in output  # the failing backend's breaker opened
    assert "demo finished: 0 client errors" in output
    assert output.count("served by:") == 6
