"""A continuation stitched into the client's stream: the first stream's id, created and model, no second role
chunk, one finish reason, usage summed, the comment where it starts; and the endings of a stream that is
already whole or cannot be finished."""

from __future__ import annotations

import json
from typing import Any

from data_plane.serving.continuation import SentSoFar
from data_plane.serving.sse_events import SseFramer, event_data
from data_plane.serving.stream_stitch import DONE_EVENT, StreamStitch, closing_events, error_event
from data_plane.serving.usage import Usage

SENT = SentSoFar(" the router", 2, "chatcmpl-first", 100, "served-a")


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def continuation(*choices: dict[str, Any], **extra: Any) -> bytes:
    return event({"id": "chatcmpl-second", "object": "chat.completion.chunk", "created": 200, "model": "served-b",
                  "choices": list(choices), **extra})


def payloads(stream: bytes) -> list[Any]:
    framer = SseFramer()
    found = []
    for raw in framer.feed(stream):
        data = event_data(raw)
        if data is not None:
            found.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return found


def test_a_continuation_reads_as_the_first_stream() -> None:
    stitch = StreamStitch(SENT, Usage(30, 2, estimated=True), "meridian resumed on b after 2 tokens from a (closed)")
    events = [
        continuation({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}),
        continuation({"index": 0, "delta": {"content": " sends"}, "finish_reason": None}),
        continuation({"index": 0, "delta": {}, "finish_reason": "length"}),
        continuation(usage={"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}),
        DONE_EVENT,
    ]
    out = b"".join(stitch.rewrite(e) for e in events)
    assert out.startswith(b": meridian resumed on b after 2 tokens from a (closed)\n\n")
    found = payloads(out)
    assert found[-1] == "[DONE]"
    chunks = found[:-1]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {("chatcmpl-first", 100, "served-a")}
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"content": " sends"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:2]] == [None, "length"]
    assert chunks[2]["usage"] == {"prompt_tokens": 70, "completion_tokens": 10, "total_tokens": 80}


def test_a_role_on_a_content_chunk_is_dropped_and_comments_pass() -> None:
    stitch = StreamStitch(SENT, Usage(0, 0, estimated=True), "c")
    stitch.rewrite(b": keep-alive\n\n")
    out = stitch.rewrite(continuation({"index": 0, "delta": {"role": "assistant", "content": " x"},
                                       "finish_reason": None}))
    assert payloads(out)[0]["choices"][0]["delta"] == {"content": " x"}
    assert stitch.rewrite(b": keep-alive\n\n") == b": keep-alive\n\n"


def test_a_whole_answer_cut_before_done_is_closed_with_its_usage() -> None:
    found = payloads(closing_events(SENT, Usage(30, 2, estimated=True), chat=True))
    assert found[0]["choices"] == [{"index": 0, "finish_reason": "length", "logprobs": None, "delta": {}}]
    assert found[0]["id"] == "chatcmpl-first"
    assert found[1]["usage"] == {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}
    assert found[2] == "[DONE]"
    finished = SentSoFar(" a", 1, "c", 1, "m", finish_reason="stop")
    assert payloads(closing_events(finished, None, chat=False)) == ["[DONE]"]


def test_the_error_event_is_openai_shaped() -> None:
    (payload,) = payloads(error_event("cut, retry the request", "stream_broken"))
    assert payload == {"error": {"message": "cut, retry the request", "type": "api_error", "param": None,
                                 "code": "stream_broken"}}
