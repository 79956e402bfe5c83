"""What a client has of a cut stream, read from the bytes relayed, and the request that continues it: table-driven
over chat and completion streams, and a property: the continuation of any cut asks for exactly the tokens left."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.serving.continuation import (
    SentSoFar,
    continuation_body,
    remaining_tokens,
    sent_so_far,
    why_not_resumable,
)
from data_plane.serving.request_shapes import parse_request
from meridian_common.catalog import ChatContinuation

ROLE = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}


def chunk(*choices: dict[str, Any], **envelope: Any) -> bytes:
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "served", **envelope,
               "choices": list(choices)}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def content(text: str, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": {"content": text}, "finish_reason": None}


def fields(body: dict[str, Any], endpoint: str = "chat/completions") -> dict[str, msgspec.Raw]:
    return parse_request(endpoint, json.dumps(body).encode()).body.fields


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 10}


def test_what_was_sent_is_read_from_the_relayed_bytes() -> None:
    written = [chunk(ROLE) + chunk(content(" the")), chunk(content(" router")) + b": keep-alive\n\n",
               chunk(content(" sends"))]
    sent = sent_so_far(written)
    assert sent == SentSoFar(" the router sends", 3, "chatcmpl-1", 7, "served", None, False, 1)


def test_a_finish_reason_and_tool_calls_are_noted() -> None:
    call = {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]},
            "finish_reason": None}
    assert sent_so_far([chunk(ROLE), chunk(call)]).tool_call_open
    done = {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    closed = sent_so_far([chunk(ROLE), chunk(call), chunk(done)])
    assert not closed.tool_call_open and closed.finish_reason == "tool_calls"


def test_completion_text_is_read_too() -> None:
    text = {"index": 0, "text": " once", "finish_reason": None}
    assert sent_so_far([chunk(text, object="text_completion")]).text == " once"


@pytest.mark.parametrize(("endpoint", "body", "written", "why"), [
    ("chat/completions", CHAT, [chunk(ROLE, content(" a"))], None),
    ("chat/completions", {**CHAT, "n": 2}, [chunk(ROLE)], "several choices"),
    ("chat/completions", CHAT, [chunk(content(" a"), content(" b", index=1))], "several choices"),
    ("chat/completions", CHAT, [chunk({"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": None})],
     "tool call"),
    ("completions", {"model": "m", "prompt": "once", "stream": True}, [], None),
    ("completions", {"model": "m", "prompt": ["once", "twice"], "stream": True}, [], "not one string"),
])
def test_why_a_stream_cannot_be_continued(endpoint: str, body: dict[str, Any], written: list[bytes],
                                          why: str | None) -> None:
    reason = why_not_resumable(endpoint, fields(body, endpoint), sent_so_far(written))
    assert (reason is None) if why is None else (reason is not None and why in reason)


def test_a_chat_continuation_continues_the_final_message_as_vllm_takes_it() -> None:
    body = {**CHAT, "temperature": 0.3, "stream_options": {"include_usage": False}}
    sent = sent_so_far([chunk(ROLE), chunk(content(" the")), chunk(content(" router"))])
    continued = json.loads(continuation_body("chat/completions", fields(body), "served", sent, ChatContinuation.VLLM))
    assert continued["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " the router"}]
    assert continued["continue_final_message"] is True and continued["add_generation_prompt"] is False
    assert (continued["model"], continued["max_tokens"], continued["temperature"]) == ("served", 8, 0.3)
    assert continued["stream_options"] == {"include_usage": True}
    prefill = json.loads(continuation_body("chat/completions", fields(body), "served", sent,
                                           ChatContinuation.PREFILL))
    assert "continue_final_message" not in prefill and prefill["messages"][-1]["content"] == " the router"


def test_a_completion_continuation_extends_the_prompt() -> None:
    body = {"model": "m", "prompt": "once", "stream": True, "max_completion_tokens": 5, "echo": True}
    sent = sent_so_far([chunk({"index": 0, "text": " upon", "finish_reason": None})])
    continued = json.loads(continuation_body("completions", fields(body, "completions"), "served", sent,
                                             ChatContinuation.VLLM))
    assert (continued["prompt"], continued["max_completion_tokens"]) == ("once upon", 4)
    assert "echo" not in continued and "continue_final_message" not in continued


@given(limit=st.integers(1, 500), sent_tokens=st.integers(0, 499))
def test_a_continuation_asks_for_the_tokens_left(limit: int, sent_tokens: int) -> None:
    body = fields({**CHAT, "max_tokens": limit})
    sent = SentSoFar(" x" * sent_tokens, sent_tokens)
    assert remaining_tokens(body, sent) == limit - sent_tokens
    if sent_tokens < limit:
        continued = json.loads(continuation_body("chat/completions", body, "m", sent, ChatContinuation.VLLM))
        assert continued["max_tokens"] + sent_tokens == limit


def test_without_a_limit_nothing_is_left_to_count() -> None:
    body = fields({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert remaining_tokens(body, SentSoFar("x", 1)) is None
    continued = json.loads(continuation_body("chat/completions", body, "m", SentSoFar("x", 1), ChatContinuation.VLLM))
    assert "max_tokens" not in continued and "max_completion_tokens" not in continued
