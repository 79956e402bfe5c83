"""Builds response bodies and server-sent events shaped exactly as OpenAI's, from plain values: the bytes
the server writes, with no request object, clock or I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from simulator.embeddings import embedding_vector, encode_base64
from simulator.request_parsing import EmbeddingRequest, GenerationKind
from simulator.settings import UsageFormat

DONE_EVENT = b"data: [DONE]\n\n"
OWNED_BY = "meridian-sim"

_ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
                413: "invalid_request_error", 500: "server_error"}


@dataclass(frozen=True, slots=True)
class Generation:
    """One finished (or to-be-streamed) generation: everything a body or a chunk is made of."""

    id: str
    created: int
    model: str
    kind: GenerationKind
    tokens: tuple[str, ...]
    prompt_tokens: int
    finish_reason: str
    usage_format: UsageFormat

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, slots=True)
class StreamEvents:
    """A stream cut where the timing happens: `head` goes with the first token, `tail` with the last."""

    head: bytes
    tokens: tuple[bytes, ...]
    tail: bytes

    def whole(self) -> bytes:
        return b"".join((self.head, *self.tokens, self.tail))


def error_body(status: int, message: str, *, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param,
                   "code": code}}
    )


def usage_fields(prompt_tokens: int, completion_tokens: int, usage_format: UsageFormat) -> dict[str, Any]:
    """The top-level fields that report usage in `usage_format` (none for `none`)."""
    if usage_format is UsageFormat.OPENAI:
        return {"usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}
    if usage_format is UsageFormat.OLLAMA:
        return {"prompt_eval_count": prompt_tokens, "eval_count": completion_tokens}
    return {}


def _object(generation: Generation, *, chunk: bool) -> str:
    if generation.kind is GenerationKind.COMPLETION:
        return "text_completion"
    return "chat.completion.chunk" if chunk else "chat.completion"


def _envelope(generation: Generation, choices: list[dict[str, Any]], *, chunk: bool) -> dict[str, Any]:
    return {"id": generation.id, "object": _object(generation, chunk=chunk), "created": generation.created,
            "model": generation.model, "choices": choices}


def completion_body(generation: Generation) -> bytes:
    """The whole non-streaming response."""
    text = "".join(generation.tokens)
    if generation.kind is GenerationKind.CHAT:
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "logprobs": None, "finish_reason": generation.finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": generation.finish_reason}
    body = _envelope(generation, [choice], chunk=False)
    body.update(usage_fields(generation.prompt_tokens, generation.completion_tokens, generation.usage_format))
    return orjson.dumps(body)


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _chunk_choice(generation: Generation, content: str | None, finish_reason: str | None,
                  role: bool = False) -> dict[str, Any]:
    if generation.kind is GenerationKind.COMPLETION:
        return {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish_reason}
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def stream_events(generation: Generation, *, include_usage: bool) -> StreamEvents:
    """OpenAI's stream: for chat a role chunk first, then one chunk per token, a chunk carrying the finish
    reason, the usage chunk (empty `choices`) when asked for and the format reports usage, `[DONE]`."""
    head = b""
    if generation.kind is GenerationKind.CHAT:
        head = _event(_envelope(generation, [_chunk_choice(generation, "", None, role=True)], chunk=True))
    tokens = tuple(_event(_envelope(generation, [_chunk_choice(generation, token, None)], chunk=True))
                   for token in generation.tokens)
    finish = _chunk_choice(generation, None, generation.finish_reason)
    tail = [_event(_envelope(generation, [finish], chunk=True))]
    usage = usage_fields(generation.prompt_tokens, generation.completion_tokens, generation.usage_format)
    if include_usage and usage:
        tail.append(_event({**_envelope(generation, [], chunk=True), **usage}))
    tail.append(DONE_EVENT)
    return StreamEvents(head=head, tokens=tokens, tail=b"".join(tail))


def embeddings_body(request: EmbeddingRequest, model: str, usage_format: UsageFormat) -> bytes:
    data = []
    for index, key in enumerate(request.inputs):
        vector = embedding_vector(key, request.dimensions)
        data.append({"object": "embedding", "index": index,
                     "embedding": encode_base64(vector) if request.base64 else vector})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if usage_format is UsageFormat.OPENAI:
        body["usage"] = {"prompt_tokens": request.prompt_tokens, "total_tokens": request.prompt_tokens}
    elif usage_format is UsageFormat.OLLAMA:
        body["prompt_eval_count"] = request.prompt_tokens
    return orjson.dumps(body)


def models_body(model: str, created: int) -> bytes:
    return orjson.dumps({"object": "list", "data": [model_card(model, created)]})


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": OWNED_BY}
