"""The router's error middleware: an unexpected exception is a 500 in OpenAI's shape, always counted, its
traceback logged at most once per interval per exception type with the number held back since."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from data_plane.app import openai_errors
from data_plane.log_throttle import LogThrottle
from data_plane.metrics import RouterMetrics


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _type_error(request: web.Request) -> web.Response:
    return web.Response(text=None + 1)  # type: ignore[operator]


async def _key_error(request: web.Request) -> web.Response:
    return web.Response(text={}["missing"])


def _unhandled(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("unhandled_error")]


def test_tracebacks_are_rate_limited_per_exception_type(caplog: pytest.LogCaptureFixture) -> None:
    metrics, clock = RouterMetrics(), _Clock()
    app = web.Application(middlewares=[openai_errors(metrics=metrics, region="r", throttle=LogThrottle(60.0),
                                                     clock=clock)])
    app.router.add_get("/type", _type_error)
    app.router.add_get("/key", _key_error)

    async def run() -> list[tuple[int, str]]:
        answers = []
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            for path, at in [("/type", 0.0)] * 5 + [("/key", 1.0), ("/type", 61.0)]:
                clock.now = at
                async with session.get(server.make_url(path)) as response:
                    answers.append((response.status, (await response.json())["error"]["code"]))
        return answers

    with caplog.at_level(logging.ERROR, logger="data_plane.app"):
        answers = asyncio.run(run())
    assert answers == [(500, "internal_error")] * 7
    logged = _unhandled(caplog)
    assert [(r.getMessage().split(" error=")[1], r.exc_info is not None) for r in logged] == [
        ("TypeError held_back=0", True), ("KeyError held_back=0", True), ("TypeError held_back=4", True)]
    assert metrics.registry.get_sample_value("meridian_unhandled_errors_total",
                                             {"region": "r", "exception": "TypeError"}) == 6
    assert metrics.registry.get_sample_value("meridian_unhandled_errors_total",
                                             {"region": "r", "exception": "KeyError"}) == 1
