"""Usage read from a stream's whole events: the usage-only chunk told apart from content, in OpenAI's and
Ollama's names, and the content chunks counted for the estimate; the `[DONE]` that ends a stream and the events
that show its backend broke."""

from __future__ import annotations

import json

import pytest

from data_plane.serving.sse_usage import StreamUsageScanner
from data_plane.serving.stream_cut import CutReason


def _data(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


CONTENT = _data({"choices": [{"index": 0, "delta": {"content": "hi"}}]})
USAGE_ONLY = _data({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 300, "total_tokens": 312}})


@pytest.mark.parametrize(("event", "usage_only", "reported", "content"), [
    (CONTENT, False, None, 1),
    (USAGE_ONLY, True, (12, 300), 0),
    (USAGE_ONLY.replace(b"\n", b"\r\n"), True, (12, 300), 0),
    (_data({"choices": [], "prompt_eval_count": 5, "eval_count": 7}), True, (5, 7), 0),  # Ollama's names
    # OpenAI's chunks carry "usage": null until the last one; a content chunk with usage is still content
    (_data({"choices": [{"delta": {"content": "x"}}], "usage": None}), False, None, 1),
    (_data({"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}), False, (1, 2), 1),
    (_data({"choices": [], "usage": None}), False, None, 0),
    (b"data: [DONE]\n\n", False, None, 0),
    (b": keep-alive\n\n", False, None, 0),
])
def test_usage_only_chunks_are_told_apart(event: bytes, usage_only: bool, reported: tuple[int, int] | None,
                                          content: int) -> None:
    scanner = StreamUsageScanner()
    assert scanner.observe(event) is usage_only
    assert scanner.reported == reported
    assert scanner.content_chunks == content


def test_the_last_usage_reported_is_kept() -> None:
    scanner = StreamUsageScanner()
    for event in (CONTENT, CONTENT, USAGE_ONLY, b"data: [DONE]\n\n"):
        scanner.observe(event)
    assert (scanner.reported, scanner.content_chunks) == ((12, 300), 2)


@pytest.mark.parametrize(("event", "fault"), [
    (CONTENT, None),
    (b": keep-alive\n\n", None),
    (b"data: [DONE]\n\n", None),
    (b'data: {not json with "usage"\n\n', CutReason.MALFORMED),
    (b'data: {"choices": [{"delta": {"content": "x"}}], "usage": nul}\n\n', CutReason.MALFORMED),
    (b"data: plain text\n\n", CutReason.MALFORMED),
    (_data({"error": {"message": "engine died", "type": "internal_error"}}), CutReason.ERROR_EVENT),
    # A token whose text is "error" is content, not an error event.
    (_data({"choices": [{"delta": {"content": "error"}}]}), None),
])
def test_events_that_show_the_backend_broke(event: bytes, fault: CutReason | None) -> None:
    scanner = StreamUsageScanner()
    scanner.observe(event)
    assert (scanner.fault.reason if scanner.fault else None) is fault


def test_done_is_noted() -> None:
    scanner = StreamUsageScanner()
    scanner.observe(CONTENT)
    assert not scanner.done
    scanner.observe(b"data: [DONE]\n\n")
    assert scanner.done and scanner.fault is None
