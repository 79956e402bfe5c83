"""The SSE framer: whole events out whatever the chunking, a partial tail kept until the end, and an event's
data as the SSE spec joins it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.serving.sse_events import SseFramer, event_data


def _frame(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    framer = SseFramer()
    events = [event for chunk in chunks for event in framer.feed(chunk)]
    return events, framer.tail()


@pytest.mark.parametrize(("chunks", "events", "tail"), [
    ([b"data: a\n\ndata: b\n\n"], [b"data: a\n\n", b"data: b\n\n"], b""),
    ([b"data: a\n", b"\ndata: b", b"\n\n"], [b"data: a\n\n", b"data: b\n\n"], b""),
    ([b"data: a\r\n\r\n", b"data: b\r\n\r", b"\n"], [b"data: a\r\n\r\n", b"data: b\r\n\r\n"], b""),
    ([b"data: a\r\n", b"\n"], [b"data: a\r\n\n"], b""),  # a mix of line endings still ends the event
    ([b": keep-alive\n\n", b"data: a\n\n"], [b": keep-alive\n\n", b"data: a\n\n"], b""),
    ([b"event: x\ndata: a\ndata: b\n\n"], [b"event: x\ndata: a\ndata: b\n\n"], b""),
    ([b"data: a\n\ndata: [DONE]"], [b"data: a\n\n"], b"data: [DONE]"),  # no blank line at the end
    ([b"data: a"], [], b"data: a"),
    ([b""], [], b""),
])
def test_framer(chunks: list[bytes], events: list[bytes], tail: bytes) -> None:
    assert _frame(chunks) == (events, tail)


def test_tail_empties_the_framer() -> None:
    framer = SseFramer()
    framer.feed(b"data: a")
    assert framer.tail() == b"data: a"
    assert framer.tail() == b""
    assert framer.feed(b"data: b\n\n") == [b"data: b\n\n"]


_events = st.lists(st.sampled_from([b"data: {\"x\": 1}", b": comment", b"data: [DONE]", b"event: e\ndata: y",
                                    b"data: " + b"z" * 300]), max_size=8)


@given(events=_events, crlf=st.booleans(), cuts=st.lists(st.integers(0, 4000), max_size=12))
def test_any_chunking_gives_the_same_events(events: list[bytes], crlf: bool, cuts: list[int]) -> None:
    newline = b"\r\n" if crlf else b"\n"
    whole = [event.replace(b"\n", newline) + newline + newline for event in events]
    stream = b"".join(whole)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _frame(chunks) == (whole, b"")


@pytest.mark.parametrize(("event", "data"), [
    (b"data: {\"a\": 1}\n\n", b'{"a": 1}'),
    (b"data:{\"a\": 1}\r\n\r\n", b'{"a": 1}'),
    (b"data: {\"a\": 1}\r\n\n", b'{"a": 1}'),
    (b"data:  two spaces\n\n", b" two spaces"),
    (b"data: one\ndata: two\n\n", b"one\ntwo"),
    (b"event: done\ndata\n\n", b""),
    (b": keep-alive\n\n", None),
    (b"id: 3\n\n", None),
])
def test_event_data(event: bytes, data: bytes | None) -> None:
    assert event_data(event) == data
