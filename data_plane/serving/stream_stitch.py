"""Stitches a continuation into the client's stream, and ends a stream that cannot be continued. Pure: events
in, the bytes to write out.

The client sees one stream: the first stream's `id`, `created` and `model` on every chunk, no second role
chunk, the continuation's one `finish_reason`, one usage chunk (the sum of every attempt's), one `[DONE]`, and
an SSE comment (`: meridian resumed ...`, which SSE clients ignore) where the continuation starts.
"""

from __future__ import annotations

from typing import Any

import orjson

from data_plane.serving.continuation import SentSoFar
from data_plane.serving.sse_events import event_data
from data_plane.serving.usage import Usage

DONE_EVENT = b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, code: str) -> bytes:
    """An OpenAI-style error event: the SDKs raise it, and no `[DONE]` follows it."""
    return _event({"error": {"message": message, "type": "api_error", "param": None, "code": code}})


def _envelope(sent: SentSoFar, chat: bool) -> dict[str, Any]:
    return {"id": sent.id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": sent.created, "model": sent.model}


def closing_events(sent: SentSoFar, usage: Usage | None, *, chat: bool) -> bytes:
    """The end of a stream whose answer the client already has whole (its finish reason came, or every token it
    allowed, before the cut): a finish chunk unless one came, the usage chunk when `usage`, `[DONE]`."""
    parts = []
    if sent.finish_reason is None:
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        choice.update({"delta": {}} if chat else {"text": ""})
        parts.append(_event({**_envelope(sent, chat), "choices": [choice]}))
    if usage is not None:
        parts.append(_event({**_envelope(sent, chat), "choices": [], "usage": usage.as_openai()}))
    parts.append(DONE_EVENT)
    return b"".join(parts)


class StreamStitch:
    """Rewrites each event of a continuation for the client's stream. `before` is the usage of the attempts
    before it (their prompts, and the tokens the client has), added to the continuation's usage chunk."""

    __slots__ = ("_before", "_comment", "_sent")

    def __init__(self, sent: SentSoFar, before: Usage, comment: str) -> None:
        self._sent = sent
        self._before = before
        self._comment = b": " + comment.replace("\n", " ").encode() + b"\n\n"

    def rewrite(self, event: bytes) -> bytes:
        """The bytes the client gets for `event` (b"" for none); the first call's start with the comment."""
        out = self._rewritten(event)
        if self._comment:
            out, self._comment = self._comment + out, b""
        return out

    def _rewritten(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None or data.strip() == b"[DONE]":
            return event
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""  # the relay cuts the stream at a malformed event before it gets here
        if not isinstance(payload, dict):
            return b""
        sent = self._sent
        for key, value in (("id", sent.id), ("created", sent.created), ("model", sent.model)):
            if key in payload and value is not None:
                payload[key] = value
        choices = payload.get("choices")
        if isinstance(choices, list) and choices:
            if not any(_carries_something(choice) for choice in choices):
                return b""  # the continuation's role chunk: the client had one
        elif isinstance(payload.get("usage"), dict):
            payload["usage"] = _summed(payload["usage"], self._before)
        return _event(payload)


def _carries_something(choice: Any) -> bool:
    """A choice with content, a tool call, a finish reason or logprobs; a role alone is dropped from it."""
    if not isinstance(choice, dict):
        return True
    delta = choice.get("delta")
    if isinstance(delta, dict):
        delta.pop("role", None)
        if any(value not in (None, "") for value in delta.values()):
            return True
    elif choice.get("text"):
        return True
    return choice.get("finish_reason") is not None or choice.get("logprobs") is not None


def _summed(usage: dict[str, Any], before: Usage) -> dict[str, Any]:
    prompt = int(usage.get("prompt_tokens") or 0) + before.prompt_tokens
    completion = int(usage.get("completion_tokens") or 0) + before.completion_tokens
    return {**usage, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
