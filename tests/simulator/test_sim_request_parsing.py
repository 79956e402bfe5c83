"""Request bodies to generation facts, and the OpenAI errors a bad body gets."""

from __future__ import annotations

from typing import Any

import pytest

from meridian_common.catalog import ChatContinuation
from simulator.request_parsing import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    GenerationKind,
    RequestError,
    decode_json_body,
    parse_embedding,
    parse_generation,
)
from simulator.tokens import VOCABULARY, continuation_start, estimate_tokens, generated_tokens

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}


def _chat(**extra: Any) -> dict[str, Any]:
    return {**CHAT, **extra}


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"'])
def test_bodies_that_are_not_json_objects(raw: bytes) -> None:
    with pytest.raises(RequestError) as raised:
        decode_json_body(raw)
    assert (raised.value.status, raised.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    ("kind", "body", "status", "code", "param"),
    [
        (GenerationKind.CHAT, {"messages": CHAT["messages"]}, 400, "missing_required_parameter", "model"),
        (GenerationKind.CHAT, _chat(model="other"), 404, "model_not_found", "model"),
        (GenerationKind.CHAT, {"model": "m"}, 400, "missing_required_parameter", "messages"),
        (GenerationKind.CHAT, _chat(messages=[]), 400, "missing_required_parameter", "messages"),
        (GenerationKind.CHAT, _chat(messages="hi"), 400, "missing_required_parameter", "messages"),
        (GenerationKind.CHAT, _chat(messages=["hi"]), 400, "invalid_value", "messages[0]"),
        (GenerationKind.CHAT, _chat(max_tokens=0), 400, "invalid_value", "max_tokens"),
        (GenerationKind.CHAT, _chat(max_tokens="5"), 400, "invalid_value", "max_tokens"),
        (GenerationKind.CHAT, _chat(max_completion_tokens=True), 400, "invalid_value",
         "max_completion_tokens"),
        (GenerationKind.CHAT, _chat(max_tokens=10**9), 400, "invalid_value", "max_tokens"),
        (GenerationKind.CHAT, _chat(stream="yes"), 400, "invalid_value", "stream"),
        (GenerationKind.CHAT, _chat(stream=True, stream_options=[]), 400, "invalid_value", "stream_options"),
        (GenerationKind.COMPLETION, {"model": "m"}, 400, "missing_required_parameter", "prompt"),
        (GenerationKind.COMPLETION, {"model": "m", "prompt": []}, 400, "missing_required_parameter",
         "prompt"),
        (GenerationKind.COMPLETION, {"model": "m", "prompt": [1, "a"]}, 400, "missing_required_parameter",
         "prompt"),
    ],
)
def test_bad_generation_requests(kind: GenerationKind, body: dict[str, Any], status: int, code: str,
                                 param: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse_generation(body, kind, "m", 16)
    assert (raised.value.status, raised.value.code, raised.value.param) == (status, code, param)
    assert raised.value.message


@pytest.mark.parametrize(
    ("extra", "output_tokens", "finish_reason"),
    [
        ({}, 16, "stop"),
        ({"max_tokens": 5}, 5, "length"),
        ({"max_completion_tokens": 7, "max_tokens": 5}, 7, "length"),
        ({"max_tokens": None}, 16, "stop"),
    ],
)
def test_output_length(extra: dict[str, Any], output_tokens: int, finish_reason: str) -> None:
    parsed = parse_generation(_chat(**extra), GenerationKind.CHAT, "m", 16)
    assert (parsed.output_tokens, parsed.finish_reason) == (output_tokens, finish_reason)


@pytest.mark.parametrize(
    ("extra", "stream", "include_usage"),
    [
        ({}, False, False),
        ({"stream": True}, True, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
        ({"stream": False, "stream_options": {"include_usage": True}}, False, False),
    ],
)
def test_streaming_options(extra: dict[str, Any], stream: bool, include_usage: bool) -> None:
    parsed = parse_generation(_chat(**extra), GenerationKind.CHAT, "m", 16)
    assert (parsed.stream, parsed.include_usage) == (stream, include_usage)


def test_prompt_tokens_are_estimated_from_every_text_part() -> None:
    messages = [{"role": "system", "content": "a" * 40},
                {"role": "user", "content": [{"type": "text", "text": "b" * 39}, {"type": "image_url"}]}]
    parsed = parse_generation(_chat(messages=messages), GenerationKind.CHAT, "m", 16)
    assert parsed.prompt_tokens == estimate_tokens("a" * 40 + "\n" + "b" * 39) == 20
    completion = parse_generation({"model": "m", "prompt": [1, 2, 3]}, GenerationKind.COMPLETION, "m", 16)
    assert completion.prompt_tokens == 3


@pytest.mark.parametrize(
    ("kind", "body", "cache_text"),
    [
        (GenerationKind.CHAT, {"messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                                         {"type": "image_url"}]}]},
         "system\nbe brief\nuser\nhi\n"),
        (GenerationKind.CHAT, {"messages": [{"content": "no role"}]}, "\nno role\n"),
        (GenerationKind.COMPLETION, {"prompt": "Once upon"}, "Once upon"),
        (GenerationKind.COMPLETION, {"prompt": ["a", "b"]}, "a\nb"),
        (GenerationKind.COMPLETION, {"prompt": [17, 4, 9]}, "17,4,9"),  # ids key the cache, not their count
    ],
)
def test_the_prefix_cache_keys_on_roles_and_text(kind: GenerationKind, body: dict[str, Any], cache_text: str) -> None:
    assert parse_generation({"model": "m", **body}, kind, "m", 16).cache_text == cache_text


@pytest.mark.parametrize(
    ("value", "inputs", "tokens"),
    [
        ("abcd", 1, 1),
        (["abcd", "efghi"], 2, 3),
        ([5, 6, 7], 1, 3),
        ([[5, 6], [7]], 2, 3),
    ],
)
def test_embedding_inputs(value: object, inputs: int, tokens: int) -> None:
    parsed = parse_embedding({"model": "m", "input": value}, "m")
    assert (len(parsed.inputs), parsed.prompt_tokens) == (inputs, tokens)
    assert parsed.dimensions == DEFAULT_EMBEDDING_DIMENSIONS and not parsed.base64


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [["a"]]}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse_embedding(body, "m")
    assert (raised.value.status, raised.value.param) == (400, param)


def test_generated_tokens_are_deterministic_words() -> None:
    assert generated_tokens(3, 5) == generated_tokens(3, 5)
    assert len(set(generated_tokens(0, len(VOCABULARY)))) == len(VOCABULARY)
    assert all(token.startswith(" ") and token.strip() for token in generated_tokens(11, 40))


@pytest.mark.parametrize("start", [0, 5, len(VOCABULARY) - 1])
@pytest.mark.parametrize("cut", [1, 3, len(VOCABULARY) + 2])
def test_a_cut_answer_continued_from_its_text_is_the_uncut_answer(start: int, cut: int) -> None:
    whole = generated_tokens(start, cut + 10)
    following = continuation_start("".join(whole[:cut]))
    assert following is not None
    assert generated_tokens(following, 10) == whole[cut:]


@pytest.mark.parametrize("text", ["", "the", " routers", "hello world", " the "])
def test_text_not_ending_in_a_token_has_no_continuation(text: str) -> None:
    assert continuation_start(text) is None


def _continuing(**fields: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " the router"}]
    return {"model": "m", "messages": messages, **fields}


def test_continue_final_message_continues_the_assistant_text() -> None:
    parsed = parse_generation(_continuing(continue_final_message=True, add_generation_prompt=False),
                              GenerationKind.CHAT, "m", 16)
    assert parsed.continues == " the router"
    assert parse_generation(_continuing(), GenerationKind.CHAT, "m", 16).continues == ""
    prompt = {"model": "m", "prompt": "once the"}
    assert parse_generation(prompt, GenerationKind.COMPLETION, "m", 16).continues == "once the"


@pytest.mark.parametrize(("body", "param"), [
    (_continuing(continue_final_message=True), "add_generation_prompt"),
    (_continuing(continue_final_message=True, add_generation_prompt=True), "add_generation_prompt"),
    ({**CHAT, "continue_final_message": True, "add_generation_prompt": False}, "messages"),
])
def test_continue_final_message_is_refused_as_vllm_refuses_it(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as raised:
        parse_generation(body, GenerationKind.CHAT, "m", 16)
    assert (raised.value.status, raised.value.param) == (400, param)


def test_a_prefill_server_continues_a_final_assistant_message_as_it_is() -> None:
    parsed = parse_generation(_continuing(), GenerationKind.CHAT, "m", 16, ChatContinuation.PREFILL)
    assert parsed.continues == " the router"
    assert parse_generation(CHAT, GenerationKind.CHAT, "m", 16, ChatContinuation.PREFILL).continues == ""


@pytest.mark.parametrize("field", ["continue_final_message", "add_generation_prompt"])
def test_a_prefill_server_refuses_vllms_continuation_fields(field: str) -> None:
    with pytest.raises(RequestError, match=f"unrecognized request argument supplied: {field}") as raised:
        parse_generation(_continuing(**{field: field == "continue_final_message"}), GenerationKind.CHAT, "m", 16,
                         ChatContinuation.PREFILL)
    assert (raised.value.status, raised.value.param) == (400, field)
