"""Relays one backend answer to the client: a whole body, or a stream event by event as it arrives. I/O
only: what the answer says about the backend is the caller's to record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from data_plane.serving.backend_answer import BackendAnswer
from data_plane.serving.request_shapes import ParsedRequest
from data_plane.serving.sse_events import SseFramer
from data_plane.serving.sse_usage import StreamUsageScanner
from data_plane.serving.usage import Usage, answer_usage

PASSED_THROUGH_HEADERS = ("Content-Type", "openai-processing-ms", "x-request-id")


class RetryableFailure(Exception):
    """The attempt failed before any byte reached the client: the next candidate may take it. `answer` is the
    backend's when its status was the failure."""

    def __init__(self, reason: str, answer: BackendAnswer | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer

    @property
    def code(self) -> str:
        """What kind of failure, without its detail (`http_502`, `ClientConnectorError`...): what a client may
        see and metrics label. The detail (a backend's body, a host and port) is for the log only."""
        return self.reason.split(" ", 1)[0]


@dataclass(frozen=True, slots=True)
class StreamRelay:
    response: web.StreamResponse
    first_token_at: float
    usage: Usage
    broken: str | None  # why the backend's stream broke after bytes reached the client
    client_gone: bool


async def relay_whole(parsed: ParsedRequest, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str]) -> tuple[web.Response, Usage]:
    payload = await upstream.read()
    usage = Usage(parsed.estimated_prompt_tokens, 0, estimated=True)
    if upstream.status == 200 and upstream.content_type == "application/json":
        try:
            document: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            usage = answer_usage(document, parsed.estimated_prompt_tokens)
            if "usage" not in document and parsed.endpoint != "embeddings":
                document["usage"] = usage.as_openai()
                payload = orjson.dumps(document)
    headers["x-meridian-usage"] = "estimated" if usage.estimated else "reported"
    headers.pop("Content-Type", None)
    return web.Response(status=upstream.status, body=payload, headers=headers,
                        content_type=upstream.content_type), usage


async def relay_stream(request: web.Request, parsed: ParsedRequest, upstream: aiohttp.ClientResponse,
                       headers: dict[str, str], clock: Callable[[], float],
                       on_first_token: Callable[[float], None]) -> StreamRelay:
    """Relays the stream event by event: each whole event is written as soon as its last byte arrives (a
    backend's chunk that completes several is one write), and what follows the last one at the end. The
    usage-only chunk is kept from a client that did not ask for it (`ParsedRequest.asks_backend_usage`).
    Raises RetryableFailure when the backend closes before its first byte (nothing reached the client)."""
    first = await upstream.content.readany()
    if not first:
        raise RetryableFailure("empty_stream backend closed the stream before the first byte")
    first_token_at = clock()
    on_first_token(first_token_at)
    framer, scanner = SseFramer(), StreamUsageScanner()
    hide_usage = parsed.asks_backend_usage

    def relayed(events: list[bytes]) -> bytes:
        return b"".join(event for event in events if not (scanner.observe(event) and hide_usage))

    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    await response.prepare(request)
    broken: str | None = None
    client_gone = False
    try:
        chunk = first
        while chunk:
            if out := relayed(framer.feed(chunk)):
                await response.write(out)
            chunk = await upstream.content.readany()
        tail = framer.tail()  # a last event the backend did not end with a blank line
        if tail and (out := relayed([tail])):
            await response.write(out)
    except ConnectionResetError:
        client_gone = True
    except (aiohttp.ClientError, TimeoutError) as error:
        # Bytes already reached the client, so no retry: end the stream with an error event. A partial event
        # held back is dropped: written, it would run into the error event and spoil both.
        broken = type(error).__name__
        message = f"the backend stream broke after it started: {broken}"
        await response.write(b"data: " + orjson.dumps(
            {"error": {"message": message, "type": "api_error", "param": None, "code": "stream_broken"}}
        ) + b"\n\n")
    if broken is None and not client_gone:
        await response.write_eof()
    usage = Usage(*(scanner.reported or (parsed.estimated_prompt_tokens, scanner.content_chunks)),
                  estimated=scanner.reported is None)
    return StreamRelay(response, first_token_at, usage, broken, client_gone)
