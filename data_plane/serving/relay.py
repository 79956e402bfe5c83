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
from data_plane.serving.stream_cut import Cut, CutReason
from data_plane.serving.stream_stall import StallWatch, StreamStalled
from data_plane.serving.stream_stitch import StreamStitch
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
    cut: Cut | None  # why the backend's stream counts as cut after bytes reached the client
    client_gone: bool
    written: list[bytes]  # what the client got, in order: read only if the stream is cut, to continue it


@dataclass(frozen=True, slots=True)
class Resumed:
    """Where a continuation goes: the client's stream already under way, what it got so far (appended to),
    and how the continuation's events are rewritten into it."""

    response: web.StreamResponse
    written: list[bytes]
    stitch: StreamStitch


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
                       on_first_token: Callable[[float], None], *, stall_s: float,
                       resumed: Resumed | None = None) -> StreamRelay:
    """Relays the stream event by event: each whole event is written as soon as its last byte arrives (a
    backend's chunk that completes several is one write); half an event is never written. The usage-only chunk
    is kept from a client that did not ask for it (`ParsedRequest.asks_backend_usage`). The stream counts as
    cut (`StreamRelay.cut`, nothing more is written: the caller continues or ends it) when the backend closes
    or resets it before `[DONE]`, sends nothing for `stall_s`, or sends a malformed or an error event. With
    `resumed`, the events continue a stream already under way. Raises RetryableFailure when the backend
    closes before its first byte (nothing reached the client)."""
    first = await upstream.content.readany()
    if not first:
        raise RetryableFailure("empty_stream backend closed the stream before the first byte")
    first_token_at = clock()
    on_first_token(first_token_at)
    framer, scanner = SseFramer(), StreamUsageScanner()
    hide_usage = parsed.asks_backend_usage
    if resumed is None:
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        await response.prepare(request)
        written: list[bytes] = []
        rewrite = None
    else:
        response, written, rewrite = resumed.response, resumed.written, resumed.stitch.rewrite

    def relayed(events: list[bytes]) -> bytes:
        kept = [event for event in events if not ((scanner.observe(event) and hide_usage) or scanner.fault)]
        return b"".join(kept if rewrite is None else map(rewrite, kept))

    cut: Cut | None = None
    client_gone = False
    watch = StallWatch(upstream.content, stall_s)
    try:
        chunk = first
        while chunk and scanner.fault is None:
            if out := relayed(framer.feed(chunk)):
                written.append(out)
                await response.write(out)
            if scanner.fault is None:
                chunk = await upstream.content.readany()
        # What follows the last blank line is relayed only when it is the `[DONE]` the backend did not end with
        # one; anything else there is half an event.
        tail = framer.tail()
        if tail and not scanner.done and scanner.fault is None and (out := relayed([tail])) and scanner.done:
            await response.write(out + b"\n\n")
        cut = scanner.fault or (None if scanner.done else Cut(CutReason.CLOSED, "closed before [DONE]"))
    except ConnectionResetError:
        client_gone = True
    except StreamStalled as stalled:
        cut = Cut(CutReason.STALLED, str(stalled))
    except (aiohttp.ClientError, TimeoutError) as error:
        cut = Cut(CutReason.CLOSED, f"{type(error).__name__} {error}".strip())
    finally:
        watch.stop()
    if cut is None and not client_gone:
        await response.write_eof()
    usage = Usage(*(scanner.reported or (parsed.estimated_prompt_tokens, scanner.content_chunks)),
                  estimated=scanner.reported is None)
    return StreamRelay(response, first_token_at, usage, cut, client_gone, written)
