"""When an engine metrics page is due and which scrapes are logged (data_plane/deployments/engine_scrape_state.py)."""

from __future__ import annotations

import pytest

from data_plane.deployments.engine_scrape_state import ScrapeResult, ScrapeTarget, ScrapeTransition

F, N, X = ScrapeResult.FIGURES, ScrapeResult.NO_METRICS, ScrapeResult.FAILED


@pytest.mark.parametrize(("results", "transitions"), [
    ([F, F, F], [None, None, None]),
    ([F, X, X, X, F, F], [None, ScrapeTransition.STARTED_FAILING, None, None, ScrapeTransition.RECOVERED, None]),
    ([X, F], [ScrapeTransition.STARTED_FAILING, ScrapeTransition.RECOVERED]),
    ([N, N, F], [ScrapeTransition.NO_METRICS, None, None]),
    ([X, N], [ScrapeTransition.STARTED_FAILING, ScrapeTransition.NO_METRICS]),
])
def test_one_line_per_change_never_one_per_scrape(results: list[ScrapeResult],
                                                  transitions: list[ScrapeTransition | None]) -> None:
    target = ScrapeTarget()
    assert [target.record(result, float(i), 30.0) for i, result in enumerate(results)] == transitions


def test_a_page_without_engine_metrics_is_tried_again_rarely() -> None:
    target = ScrapeTarget()
    assert target.due(0.0)
    target.record(N, 10.0, 30.0)
    assert not target.due(39.9) and target.due(40.0)
    target.record(X, 40.0, 30.0)
    assert target.due(40.0)  # a failing page is due every interval
