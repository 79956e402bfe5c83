"""What a client already has of a cut stream, and the request that continues it on another deployment. Pure:
the events relayed go in, a verdict and a request body come out; nothing here is on the path of a stream that
is not cut (the events are read only once a stream breaks).

A chat stream is continued as vLLM and SGLang continue one: the original messages, then an assistant message
holding the text already sent, with `continue_final_message: true` and `add_generation_prompt: false`
(`ChatContinuation.VLLM`); servers that continue a final assistant message as it is take the same messages
without those two fields (`ChatContinuation.PREFILL`, the generic fallback). A completion stream is continued
with its prompt extended by the text sent. `max_tokens` (or `max_completion_tokens`) is reduced by the tokens
sent, counted as the content chunks relayed (one token each on the engines Meridian targets).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from data_plane.serving.sse_events import SseFramer, event_data
from meridian_common.catalog import ChatContinuation

_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()
_TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")


@dataclass(frozen=True, slots=True)
class SentSoFar:
    """The client's view of a stream so far (choice 0), read from the events relayed to it."""

    text: str = ""
    tokens: int = 0  # content chunks
    id: str | None = None
    created: int | None = None
    model: str | None = None
    finish_reason: str | None = None
    tool_call_open: bool = False  # a tool call was being streamed and not finished
    choices: int = 0  # distinct choice indexes seen


def sent_so_far(written: Iterable[bytes]) -> SentSoFar:
    """`written`: the bytes relayed to the client, in order (whole events, as the relay writes them)."""
    framer = SseFramer()
    texts: list[str] = []
    tokens, indexes = 0, set()
    first: dict[str, Any] = {}
    finish: str | None = None
    tool_open = False
    for blob in written:
        for event in framer.feed(blob):
            data = event_data(event)
            if data is None or data.strip() == b"[DONE]":
                continue
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(payload, dict):
                continue
            for key in ("id", "created", "model"):
                first.setdefault(key, payload.get(key))
            for choice in payload.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                indexes.add(choice.get("index", 0))
                delta = choice.get("delta")
                content = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(content, str) and content and choice.get("index", 0) == 0:
                    texts.append(content)
                    tokens += 1
                if isinstance(delta, dict) and delta.get("tool_calls"):
                    tool_open = True
                if choice.get("finish_reason") is not None:
                    finish, tool_open = str(choice["finish_reason"]), False
    return SentSoFar("".join(texts), tokens, first.get("id"), first.get("created"), first.get("model"), finish,
                     tool_open, len(indexes))


def remaining_tokens(fields: dict[str, msgspec.Raw], sent: SentSoFar) -> int | None:
    """The tokens the request still allows after those sent; None when it sets no limit."""
    for name in _TOKEN_LIMITS:
        if name in fields:
            limit = _ANY.decode(fields[name])
            if isinstance(limit, int):
                return limit - sent.tokens
    return None


def why_not_resumable(endpoint: str, fields: dict[str, msgspec.Raw], sent: SentSoFar) -> str | None:
    """Why this stream cannot be continued elsewhere, or None when it can."""
    if endpoint not in ("chat/completions", "completions"):
        return f"a {endpoint} stream cannot be continued"
    n = _ANY.decode(fields["n"]) if "n" in fields else 1
    if (isinstance(n, int) and n > 1) or sent.choices > 1:
        return "it asked for several choices (n > 1), which cannot be continued one by one"
    if sent.tool_call_open:
        return "it was cut in the middle of a tool call's arguments"
    if endpoint == "completions" and not isinstance(_ANY.decode(fields["prompt"]), str):
        return "its prompt is not one string, so it cannot be extended by the text sent"
    return None


def continuation_body(endpoint: str, fields: dict[str, msgspec.Raw], served_model: str, sent: SentSoFar,
                      style: ChatContinuation) -> bytes:
    """The request that continues the stream on a deployment serving `served_model`, asking for its usage (the
    client's usage chunk is the sum of every attempt's). Only for a stream `why_not_resumable` accepts."""
    body: dict[str, Any] = {**fields, "model": served_model}
    if endpoint == "chat/completions":
        body["messages"] = [*_RAW_LIST.decode(fields["messages"]), {"role": "assistant", "content": sent.text}]
        if style is ChatContinuation.VLLM:
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
    else:
        body["prompt"] = _ANY.decode(fields["prompt"]) + sent.text
        body.pop("echo", None)  # the prompt now holds text the client already has
    remaining = remaining_tokens(fields, sent)
    for name in _TOKEN_LIMITS:
        if name in fields and remaining is not None:
            body[name] = max(1, remaining)
    options = _ANY.decode(fields["stream_options"]) if "stream_options" in fields else None
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return _ENCODER.encode(body)
