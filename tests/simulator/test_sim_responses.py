"""Bodies and stream events: validated against the official SDK's own types, in every usage format."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from simulator.embeddings import embedding_vector
from simulator.request_parsing import EmbeddingRequest, GenerationKind
from simulator.responses import (
    DONE_EVENT,
    Generation,
    completion_body,
    embeddings_body,
    error_body,
    models_body,
    stream_events,
)
from simulator.settings import UsageFormat
from simulator.tokens import generated_tokens


def _generation(kind: GenerationKind = GenerationKind.CHAT, usage_format: UsageFormat = UsageFormat.OPENAI,
                tokens: int = 4) -> Generation:
    return Generation(id="chatcmpl-1", created=1_700_000_000, model="m", kind=kind,
                      tokens=generated_tokens(0, tokens), prompt_tokens=9, finish_reason="length",
                      usage_format=usage_format)


def _events(raw: bytes) -> list[Any]:
    assert raw.endswith(DONE_EVENT)
    parts = raw.split(b"\n\n")
    assert parts[-1] == b"" and parts[-2] == b"data: [DONE]"
    assert all(part.startswith(b"data: ") for part in parts[:-1])
    return [orjson.loads(part[6:]) for part in parts[:-2]]


def test_chat_completion_parses_as_the_sdk_type() -> None:
    body = orjson.loads(completion_body(_generation()))
    completion = ChatCompletion.model_validate(body)
    assert completion.object == "chat.completion" and completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "".join(generated_tokens(0, 4))
    assert completion.usage is not None
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (9, 4, 13)


def test_text_completion_parses_as_the_sdk_type() -> None:
    body = orjson.loads(completion_body(_generation(GenerationKind.COMPLETION)))
    completion = Completion.model_validate(body)
    assert completion.object == "text_completion" and completion.choices[0].text


@pytest.mark.parametrize(
    ("usage_format", "fields"),
    [
        (UsageFormat.OPENAI, {"usage"}),
        (UsageFormat.OLLAMA, {"prompt_eval_count", "eval_count"}),
        (UsageFormat.NONE, set()),
    ],
)
def test_usage_formats(usage_format: UsageFormat, fields: set[str]) -> None:
    body = orjson.loads(completion_body(_generation(usage_format=usage_format)))
    assert set(body) - {"id", "object", "created", "model", "choices"} == fields
    if usage_format is UsageFormat.OLLAMA:
        assert (body["prompt_eval_count"], body["eval_count"]) == (9, 4)


def test_chat_stream_is_role_tokens_finish_usage_done() -> None:
    events = stream_events(_generation(tokens=3), include_usage=True)
    chunks = [ChatCompletionChunk.model_validate(e) for e in _events(events.whole())]
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in chunks[1:4]] == list(generated_tokens(0, 3))
    assert chunks[4].choices[0].finish_reason == "length" and chunks[4].choices[0].delta.content is None
    assert chunks[5].choices == [] and chunks[5].usage is not None and chunks[5].usage.completion_tokens == 3
    assert len(chunks) == 6 and {c.id for c in chunks} == {"chatcmpl-1"}
    assert len(events.tokens) == 3  # one token per chunk, so they can be paced one by one


@pytest.mark.parametrize(
    ("usage_format", "include_usage", "usage_chunk"),
    [
        (UsageFormat.OPENAI, False, None),
        (UsageFormat.OLLAMA, True, {"prompt_eval_count": 9, "eval_count": 2}),
        (UsageFormat.NONE, True, None),
    ],
)
def test_stream_usage_follows_the_format(usage_format: UsageFormat, include_usage: bool,
                                         usage_chunk: dict[str, int] | None) -> None:
    chunks = _events(stream_events(_generation(usage_format=usage_format, tokens=2),
                                   include_usage=include_usage).whole())
    assert all("usage" not in c for c in chunks)
    if usage_chunk is None:
        assert all(c["choices"] for c in chunks)
    else:
        assert chunks[-1]["choices"] == [] and usage_chunk.items() <= chunks[-1].items()


def test_completion_stream_chunks_are_text_completions() -> None:
    generation = _generation(GenerationKind.COMPLETION, tokens=2)
    chunks = _events(stream_events(generation, include_usage=True).whole())
    # As OpenAI's own stream, token chunks carry `finish_reason: null`, which the SDK's type (validated
    # strictly here, never by the SDK while streaming) does not allow; so only the last two are validated.
    assert [c["choices"][0]["text"] for c in chunks[:2]] == list(generated_tokens(0, 2))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:2])
    finish, usage = (Completion.model_validate(c) for c in chunks[2:])
    assert finish.choices[0].finish_reason == "length" and usage.usage is not None


@pytest.mark.parametrize("as_base64", [False, True])
def test_embeddings_parse_and_decode(as_base64: bool) -> None:
    request = EmbeddingRequest(inputs=("a", "b"), prompt_tokens=2, dimensions=8, base64=as_base64)
    body = orjson.loads(embeddings_body(request, "m", UsageFormat.OPENAI))
    raw = body["data"][1]["embedding"]
    if as_base64:
        # The SDK's type says floats; it builds the response unvalidated and decodes base64 afterwards.
        body["data"] = [{**d, "embedding": list(struct.unpack("<8f", base64.b64decode(d["embedding"])))}
                        for d in body["data"]]
    response = CreateEmbeddingResponse.model_validate(body)
    assert [d.index for d in response.data] == [0, 1] and response.usage.prompt_tokens == 2
    assert response.data[1].embedding == pytest.approx(embedding_vector("b", 8), rel=1e-6)
    assert isinstance(raw, str) == as_base64


def test_error_and_models_bodies() -> None:
    error = orjson.loads(error_body(404, "no such model", code="model_not_found", param="model"))["error"]
    assert error == {"message": "no such model", "type": "invalid_request_error", "param": "model",
                     "code": "model_not_found"}
    assert orjson.loads(error_body(500, "boom", code=None))["error"]["type"] == "server_error"
    assert orjson.loads(models_body("m", 5)) == {
        "object": "list", "data": [{"id": "m", "object": "model", "created": 5, "owned_by": "meridian-sim"}]}
