"""Receives and parses request bodies within the router's limits: one body's size (413), the bytes of every body
held at once (503 with Retry-After) and the time to receive one (408). A body's share of the budget is taken
before it is read and given back when its request is done."""

from __future__ import annotations

import asyncio
from types import TracebackType

from aiohttp import web

from data_plane.errors import ClientError
from data_plane.limits.body_budget import BodyBudget, BodyShare
from data_plane.metrics import RouterMetrics
from data_plane.serving.request_parsing import parse_openai_request
from data_plane.serving.request_shapes import ParsedRequest

# Parsing a body this large can hold the event loop for milliseconds (a 16 MiB one of tiny objects, 0.2 s):
# such bodies are parsed one at a time, each after a turn of the loop, so that other requests are served
# between them rather than after all of them.
LARGE_BODY_BYTES = 1024 * 1024


class BodyIntake:
    def __init__(self, *, max_body_bytes: int, in_flight_bytes: int, read_timeout_s: float,
                 metrics: RouterMetrics, region: str) -> None:
        self._max_bytes = max_body_bytes
        self._read_timeout_s = read_timeout_s
        self._budget = BodyBudget(in_flight_bytes)
        self._large_parse = asyncio.Lock()
        metrics.request_body_bytes_held.read_from(lambda: [((region,), self._budget.held_bytes)])
        self._refused = {reason: metrics.request_bodies_refused.labels(region, reason)
                         for reason in ("too_large", "over_budget", "read_timeout")}

    def receive(self, request: web.Request, endpoint: str, *, max_body_bytes: int | None = None) -> Reception:
        """`async with` it for the request for `endpoint` (see parse_openai_request), its body held (and counted
        in the budget) until the block exits; `max_body_bytes` lowers the router's limit for this body."""
        return Reception(self, request, endpoint,
                         self._max_bytes if max_body_bytes is None else min(max_body_bytes, self._max_bytes))

    async def parse(self, request: web.Request, endpoint: str, share: BodyShare, limit: int) -> ParsedRequest:
        declared = request.content_length
        if declared is not None:
            self._check_size(declared, limit)
            self._grow(share, declared)
        body = await self._read(request, share, limit, counted=declared is not None)
        if len(body) < LARGE_BODY_BYTES:
            return parse_openai_request(endpoint, body)
        async with self._large_parse:
            await asyncio.sleep(0)
            return parse_openai_request(endpoint, body)

    def share(self) -> BodyShare:
        return self._budget.share()

    async def _read(self, request: web.Request, share: BodyShare, limit: int, *, counted: bool) -> bytearray:
        content = request.content
        if content.is_eof():
            # The whole body came with the headers (most do): nothing to wait for, so no timer to arm.
            body = bytearray(content.read_nowait())
            self._check_size(len(body), limit)
            if not counted:
                self._grow(share, len(body))
            return body
        body = bytearray()
        try:
            async with asyncio.timeout(self._read_timeout_s):
                while chunk := await content.readany():
                    size = len(body) + len(chunk)
                    self._check_size(size, limit)
                    if not counted:
                        self._grow(share, size)
                    body += chunk
        except TimeoutError as error:
            self._refused["read_timeout"].inc()
            raise ClientError(408, f"the request body did not arrive within {self._read_timeout_s} s "
                              f"({len(body)} bytes received)", code="request_timeout") from error
        return body

    def _check_size(self, size: int, limit: int) -> None:
        if size > limit:
            self._refused["too_large"].inc()
            raise ClientError(413, f"request body of {size} bytes or more is over the limit of {limit} bytes",
                              code="request_too_large")

    def _grow(self, share: BodyShare, size: int) -> None:
        if not share.grow_to(size):
            self._refused["over_budget"].inc()
            budget = self._budget
            raise ClientError(503, f"the router holds {budget.held_bytes} bytes of request bodies, and "
                              f"{size - share.held_bytes} more would pass its limit of {budget.capacity_bytes} "
                              "(request_bodies.in_flight_bytes); retry shortly", code="request_bodies_over_budget",
                              headers={"Retry-After": "1"})


class Reception:
    """One body received through a BodyIntake: the parsed request on entry, its share of the budget given back
    on exit. A class rather than an async generator: it is entered on every request."""

    __slots__ = ("_intake", "_request", "_endpoint", "_limit", "_share")

    def __init__(self, intake: BodyIntake, request: web.Request, endpoint: str, limit: int) -> None:
        self._intake, self._request, self._endpoint, self._limit = intake, request, endpoint, limit
        self._share: BodyShare | None = None

    async def __aenter__(self) -> ParsedRequest:
        share = self._share = self._intake.share()
        try:
            return await self._intake.parse(self._request, self._endpoint, share, self._limit)
        except BaseException:
            share.release()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._share is not None:
            self._share.release()
