"""The OpenAI request shapes the router reads: good bodies and what the router takes from them, bad ones and
the field path and code of their 400, and the body sent upstream (the client's fields as sent, with the
served model)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_plane.serving.request_shapes import InvalidRequest, ParsedRequest, body_model, optional_text, parse_request

USER = {"role": "user", "content": "hello world!"}  # 12 characters: 3 tokens


def _parse(endpoint: str, body: Any) -> ParsedRequest:
    return parse_request(endpoint, json.dumps(body).encode())


@pytest.mark.parametrize(("endpoint", "body", "tokens", "streaming", "max_tokens", "temperature"), [
    ("chat/completions", {"model": "m", "messages": [USER]}, 3, False, None, None),
    ("chat/completions", {"model": "m", "messages": [USER], "stream": True, "max_tokens": 5, "temperature": 0},
     3, True, 5, 0.0),
    ("chat/completions", {"model": "m", "messages": [USER], "max_tokens": 5, "max_completion_tokens": 7}, 3, False,
     7, None),
    ("chat/completions", {"model": "m", "messages": [USER], "stream": None, "max_tokens": None}, 3, False, None,
     None),
    pytest.param("chat/completions", {"model": "m", "messages": [
        {"role": "system", "content": "abcd"},
        {"role": "user", "content": [{"type": "text", "text": "abcd"},
                                     {"type": "image_url", "image_url": {"url": "data:..."}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {}}]},
        {"role": "tool", "content": "abcd", "tool_call_id": "1"},
        {"role": "developer", "content": ""},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "abcd"},
    ]}, 4, False, None, None, id="every role, content parts, tool calls"),
    ("completions", {"model": "m", "prompt": "abcdefgh"}, 2, False, None, None),
    ("completions", {"model": "m", "prompt": ["abcd", "abcd"]}, 2, False, None, None),
    ("completions", {"model": "m", "prompt": [1, 2, 3]}, 3, False, None, None),
    ("completions", {"model": "m", "prompt": [[1, 2], [3]]}, 3, False, None, None),
    ("embeddings", {"model": "m", "input": "abcd"}, 1, False, None, None),
    ("embeddings", {"model": "m", "input": ["abcd", "efgh", ""]}, 2, False, None, None),
    ("embeddings", {"model": "m", "input": [[5, 6, 7, 8]]}, 4, False, None, None),
])
def test_good_shapes(endpoint: str, body: dict[str, Any], tokens: int, streaming: bool, max_tokens: int | None,
                     temperature: float | None) -> None:
    parsed = _parse(endpoint, body)
    assert (parsed.endpoint, parsed.model, parsed.estimated_prompt_tokens, parsed.streaming,
            parsed.max_output_tokens, parsed.temperature) == (endpoint, "m", tokens, streaming, max_tokens,
                                                              temperature)


def _chat(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


@pytest.mark.parametrize(("endpoint", "body", "param", "code"), [
    # the body itself
    ("chat/completions", b"{not json", None, "invalid_json"),
    ("chat/completions", b"", None, "invalid_json"),
    ("chat/completions", b'{"model": "m"} trailing', None, "invalid_json"),
    ("chat/completions", b"[1, 2]", None, "invalid_json"),
    # model
    ("chat/completions", {"messages": [USER]}, "model", "missing_model"),
    ("chat/completions", {"model": "", "messages": [USER]}, "model", "missing_model"),
    ("chat/completions", {"model": None, "messages": [USER]}, "model", "missing_model"),
    ("chat/completions", {"model": 7, "messages": [USER]}, "model", "invalid_type"),
    # messages
    ("chat/completions", {"model": "m"}, "messages", "missing_required_parameter"),
    ("chat/completions", _chat(), "messages", "invalid_value"),
    ("chat/completions", {"model": "m", "messages": 5}, "messages", "invalid_type"),
    ("chat/completions", {"model": "m", "messages": None}, "messages", "invalid_type"),
    ("chat/completions", {"model": "m", "messages": {"role": "user"}}, "messages", "invalid_type"),
    ("chat/completions", _chat(USER, "hi"), "messages[1]", "invalid_type"),
    ("chat/completions", _chat(USER, {}), "messages[1].role", "missing_required_parameter"),
    ("chat/completions", _chat(USER, USER, {"content": "x"}), "messages[2].role", "missing_required_parameter"),
    ("chat/completions", _chat({"role": "bot", "content": "x"}), "messages[0].role", "invalid_value"),
    ("chat/completions", _chat({"role": 1, "content": "x"}), "messages[0].role", "invalid_type"),
    ("chat/completions", _chat({"role": "user"}), "messages[0].content", "invalid_value"),
    ("chat/completions", _chat({"role": "user", "content": None}), "messages[0].content", "invalid_value"),
    ("chat/completions", _chat({"role": "assistant", "content": None}), "messages[0].content", "invalid_value"),
    ("chat/completions", _chat({"role": "user", "content": 5}), "messages[0].content", "invalid_type"),
    ("chat/completions", _chat({"role": "user", "content": [5]}), "messages[0].content[0]", "invalid_type"),
    ("chat/completions", _chat({"role": "user", "content": [{"text": "x"}]}), "messages[0].content[0].type",
     "missing_required_parameter"),
    ("chat/completions", _chat(USER, USER, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": None}]}),
     "messages[2].content[1].text", "invalid_type"),
    ("chat/completions", _chat({"role": "user", "content": [{"type": "text"}]}), "messages[0].content[0].text",
     "missing_required_parameter"),
    ("chat/completions", _chat({"role": "user", "content": [{"type": "text", "text": 3}]}),
     "messages[0].content[0].text", "invalid_type"),
    ("chat/completions", _chat({"role": "assistant", "content": None, "tool_calls": 3}), "messages[0].tool_calls",
     "invalid_type"),
    # the fields every endpoint reads
    ("chat/completions", _chat(USER, stream="yes"), "stream", "invalid_type"),
    ("chat/completions", _chat(USER, stream=1), "stream", "invalid_type"),
    ("chat/completions", _chat(USER, max_tokens=0), "max_tokens", "invalid_value"),
    ("chat/completions", _chat(USER, max_tokens=-3), "max_tokens", "invalid_value"),
    ("chat/completions", _chat(USER, max_tokens=1.5), "max_tokens", "invalid_type"),
    ("chat/completions", _chat(USER, max_tokens="10"), "max_tokens", "invalid_type"),
    ("chat/completions", _chat(USER, max_tokens=2**40), "max_tokens", "invalid_value"),
    ("chat/completions", _chat(USER, max_completion_tokens=True), "max_completion_tokens", "invalid_type"),
    ("chat/completions", _chat(USER, temperature="hot"), "temperature", "invalid_type"),
    # completions and embeddings
    ("completions", {"model": "m", "messages": 5}, "prompt", "missing_required_parameter"),
    ("completions", {"model": "m", "prompt": 5}, "prompt", "invalid_type"),
    ("completions", {"model": "m", "prompt": None}, "prompt", "invalid_type"),
    ("completions", {"model": "m", "prompt": []}, "prompt", "invalid_value"),
    ("completions", {"model": "m", "prompt": ["a", 1]}, "prompt[1]", "invalid_type"),
    ("completions", {"model": "m", "prompt": [[1], 2]}, "prompt[1]", "invalid_type"),
    ("completions", {"model": "m", "prompt": [[1, "a"]]}, "prompt[0][1]", "invalid_type"),
    ("completions", {"model": "m", "prompt": [1.5]}, "prompt[0]", "invalid_type"),
    ("embeddings", {"model": "m"}, "input", "missing_required_parameter"),
    ("embeddings", {"model": "m", "input": {"text": "x"}}, "input", "invalid_type"),
    ("embeddings", {"model": "m", "input": [None]}, "input[0]", "invalid_type"),
])
def test_bad_shapes(endpoint: str, body: dict[str, Any] | bytes, param: str | None, code: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_request(endpoint, raw)
    error = caught.value
    assert (error.param, error.code) == (param, code), error.message
    assert error.message and (param is None or param in error.message), error.message


def test_a_wrong_role_lists_the_roles() -> None:
    with pytest.raises(InvalidRequest, match="system, user, assistant, tool, developer, function"):
        _parse("chat/completions", _chat({"role": "bot", "content": "x"}))


def test_a_million_empty_messages_fail_at_the_first() -> None:
    raw = b'{"model": "m", "messages": [' + b",".join([b"{}"] * 1_000_000) + b"]}"
    with pytest.raises(InvalidRequest) as caught:
        parse_request("chat/completions", raw)
    assert caught.value.param == "messages[0].role"


def test_the_upstream_body_is_the_clients_with_the_served_model() -> None:
    raw = b'{"temperature": 0.5, "model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [ {} ]}'
    parsed = parse_request("chat/completions", raw)
    assert parsed.body.for_model("m") is raw  # the same name: the bytes as received, no copy
    upstream = parsed.body.for_model("org/served")
    assert upstream.startswith(b'{"model":"org/served",')
    assert json.loads(upstream) == {**json.loads(raw), "model": "org/served"}
    assert b'"tools":[ {} ]' in upstream  # values as the client sent them
    assert parsed.body.for_model("org/served") is upstream  # encoded once per served model


@pytest.mark.parametrize(("extra", "asked", "options"), [
    ({"stream": True}, False, {"include_usage": True}),
    ({"stream": True, "stream_options": {"include_usage": False, "x": [1]}}, False, {"include_usage": True, "x": [1]}),
    ({"stream": True, "stream_options": None}, False, {"include_usage": True}),
    ({"stream": True, "stream_options": {"include_usage": True}}, True, None),
    ({"stream": False, "stream_options": {"include_usage": True}}, False, None),
])
def test_a_stream_asks_the_backend_for_usage_the_client_did_not(extra: dict[str, Any], asked: bool,
                                                                options: dict[str, Any] | None) -> None:
    parsed = _parse("chat/completions", {"model": "m", "messages": [USER], **extra})
    assert parsed.usage_requested is asked
    assert parsed.asks_backend_usage is (options is not None)
    if options is not None:
        upstream = parsed.body.for_model("m", ask_usage=True)
        assert json.loads(upstream) == {"model": "m", "messages": [USER], **extra, "stream_options": options}
        assert parsed.body.for_model("m", ask_usage=True) is upstream  # encoded once per model and variant
        assert json.loads(parsed.body.for_model("m")) == {"model": "m", "messages": [USER], **extra}


def test_stream_options_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as caught:
        _parse("chat/completions", {"model": "m", "messages": [USER], "stream": True, "stream_options": 1})
    assert (caught.value.param, caught.value.code) == ("stream_options", "invalid_type")


def test_without_drops_top_level_fields_only() -> None:
    parsed = _parse("chat/completions", _chat(USER, stream=True, callback_url="https://x", metadata={"stream": 1}))
    assert json.loads(parsed.body.without(("stream", "callback_url"))) == _chat(USER, metadata={"stream": 1})
    assert optional_text(parsed.body.fields, "callback_url") == "https://x"
    with pytest.raises(InvalidRequest) as caught:
        optional_text(_parse("chat/completions", _chat(USER, callback_url=5)).body.fields, "callback_url")
    assert caught.value.param == "callback_url"


def test_digest_ignores_field_order_and_the_ignored_fields() -> None:
    one = parse_request("chat/completions", b'{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}')
    two = parse_request("chat/completions", b'{"messages":[{"role":"user","content":"x"}], "model":"m"}')
    other = parse_request("chat/completions", b'{"messages":[{"role":"user","content":"y"}], "model":"m"}')
    assert one.body.digest(b"chat", {"stream"}) == two.body.digest(b"chat", {"stream"})
    assert one.body.digest(b"chat", {"stream"}) != other.body.digest(b"chat", {"stream"})
    assert one.body.digest(b"chat", {"stream"}) != one.body.digest(b"completions", {"stream"})
    assert one.body.digest(b"chat", set()) != two.body.digest(b"chat", set())


def test_body_model() -> None:
    assert body_model(b'{"messages": [{}], "model": "m"}') == "m"
    assert body_model(b'{"messages": []}') is None
    assert body_model(b"not json") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@given(extra=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in {"model", "messages", "stream",
                                                                            "max_tokens", "max_completion_tokens",
                                                                            "temperature", "callback_url",
                                                                            "stream_options"}),
                             json_values, max_size=5),
       served=st.text(min_size=1, max_size=12))
def test_fields_the_router_does_not_read_pass_through_unchanged(extra: dict[str, Any], served: str) -> None:
    body = {"model": "m", "messages": [USER], **extra}
    parsed = parse_request("chat/completions", msgspec.json.encode(body))
    assert msgspec.json.decode(parsed.body.for_model(served)) == {**body, "model": served}
