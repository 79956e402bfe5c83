"""Turns a request body into the few facts the simulator acts on, or refuses it with an OpenAI-shaped
error (status, code, param) as a real server would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from meridian_common.catalog import ChatContinuation
from simulator.settings import MAX_OUTPUT_TOKENS
from simulator.tokens import estimate_tokens

DEFAULT_EMBEDDING_DIMENSIONS = 64
MAX_EMBEDDING_DIMENSIONS = 4096


class GenerationKind(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"


class RequestError(Exception):
    """A request the simulator refuses; the server turns it into an OpenAI error response."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    kind: GenerationKind
    prompt_tokens: int
    output_tokens: int
    finish_reason: str  # "length" when max_tokens cut the answer, "stop" when the model ended it
    stream: bool
    include_usage: bool
    cache_text: str = ""
    """The text the prefix cache hashes: for chat each message's role, a newline, its text and a newline;
    for completions the prompt."""
    continues: str = ""
    """The text the answer follows on from: a completion's prompt, or a chat's final assistant message when
    the request sets `continue_final_message` (as vLLM takes it)."""


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    inputs: tuple[str, ...]  # one hashing key per input (text, or token ids rendered as text)
    prompt_tokens: int
    dimensions: int
    base64: bool


def decode_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def check_model(body: Mapping[str, Any], served_model: str) -> None:
    model = body.get("model")
    if model is None:
        raise RequestError(400, "you must provide a model parameter", code="missing_required_parameter",
                           param="model")
    if model != served_model:
        raise RequestError(404, f"the model {model!r} does not exist; this server serves {served_model!r}",
                           code="model_not_found", param="model")


def _messages_text(messages: object) -> tuple[str, str]:
    """(the text whose length estimates the prompt tokens, the text the prefix cache hashes)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty array of messages",
                           code="missing_required_parameter", param="messages")
    parts: list[str] = []
    cache_parts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(400, f"messages[{index}] must be an object with a role and content",
                               code="invalid_value", param=f"messages[{index}]")
        content = message.get("content")
        texts: list[str] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        parts += texts
        role = message.get("role")
        # The role is part of the key: the same words from another speaker are another prompt.
        cache_parts += (role if isinstance(role, str) else "", "\n", *texts, "\n")
    return "\n".join(parts), "".join(cache_parts)


def _prompt_text(prompt: object) -> tuple[str, str]:
    """(the text whose length estimates the prompt tokens, the text the prefix cache hashes)."""
    if isinstance(prompt, str):
        return prompt, prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            text = "\n".join(prompt)
            return text, text
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            # Token ids: one token each, rendered so that the estimate counts them as such; the cache keys on
            # the ids themselves.
            return "tok " * len(prompt), ",".join(map(str, prompt))
    raise RequestError(400, "'prompt' must be a non-empty string, array of strings or array of token ids",
                       code="missing_required_parameter", param="prompt")


_VLLM_CONTINUATION_FIELDS = ("continue_final_message", "add_generation_prompt")


def _final_message_text(body: Mapping[str, Any], style: ChatContinuation) -> str:
    """The final assistant message's text when the request continues it, else "": as vLLM takes it
    (`continue_final_message: true` with `add_generation_prompt: false`), or as a prefill server does (a last
    message that is the assistant's, vLLM's fields refused as unknown)."""
    last = body["messages"][-1]
    if style is ChatContinuation.PREFILL:
        unknown = [name for name in _VLLM_CONTINUATION_FIELDS if name in body]
        if unknown:
            raise RequestError(400, f"unrecognized request argument supplied: {unknown[0]}", code="invalid_value",
                               param=unknown[0])
        return _message_text(last) if last.get("role") == "assistant" else ""
    if body.get("continue_final_message") is not True:
        return ""
    if body.get("add_generation_prompt", True) is not False:
        raise RequestError(400, "continue_final_message needs add_generation_prompt: false (as vLLM has it: a "
                           "generation prompt would start a new message)", code="invalid_value",
                           param="add_generation_prompt")
    if last.get("role") != "assistant":
        raise RequestError(400, "continue_final_message needs the last message to be the assistant's, the text to "
                           "continue", code="invalid_value", param="messages")
    return _message_text(last)


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
            raise RequestError(400, f"'{name}' must be a whole number from 1 to {MAX_OUTPUT_TOKENS}, "
                               f"got {value!r}", code="invalid_value", param=name)
        return value
    return None


def _include_usage(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise RequestError(400, "'stream_options' must be an object", code="invalid_value",
                           param="stream_options")
    # Ignored without streaming rather than refused, as the router may pass it through either way.
    return stream and options.get("include_usage") is True


def parse_generation(body: Mapping[str, Any], kind: GenerationKind, served_model: str,
                     default_output_tokens: int, chat_continuation: ChatContinuation = ChatContinuation.VLLM
                     ) -> GenerationRequest:
    check_model(body, served_model)
    if kind is GenerationKind.CHAT:
        text, cache_text = _messages_text(body.get("messages"))
        continues = _final_message_text(body, chat_continuation)
    else:
        text, cache_text = _prompt_text(body.get("prompt"))
        prompt = body.get("prompt")
        continues = prompt if isinstance(prompt, str) else ""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, f"'stream' must be true or false, got {stream!r}", code="invalid_value",
                           param="stream")
    max_tokens = _max_tokens(body)
    return GenerationRequest(
        kind=kind,
        prompt_tokens=estimate_tokens(text),
        output_tokens=default_output_tokens if max_tokens is None else max_tokens,
        finish_reason="stop" if max_tokens is None else "length",
        stream=stream,
        include_usage=_include_usage(body, stream),
        cache_text=cache_text,
        continues=continues,
    )


def _embedding_inputs(value: object) -> tuple[tuple[str, ...], int]:
    """(hashing keys, prompt tokens) of an `input`: a string, strings, token ids or arrays of token ids."""

    def is_ids(item: object) -> bool:
        return isinstance(item, list) and bool(item) and all(
            isinstance(i, int) and not isinstance(i, bool) for i in item)

    if isinstance(value, str):
        return (value,), estimate_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return tuple(value), sum(estimate_tokens(v) for v in value)
        if is_ids(value):
            return (orjson.dumps(value).decode(),), len(value)
        if all(is_ids(v) for v in value):
            return tuple(orjson.dumps(v).decode() for v in value), sum(len(v) for v in value)
    raise RequestError(400, "'input' must be a non-empty string, array of strings, array of token ids or "
                       "array of token id arrays", code="missing_required_parameter", param="input")


def parse_embedding(body: Mapping[str, Any], served_model: str) -> EmbeddingRequest:
    check_model(body, served_model)
    inputs, prompt_tokens = _embedding_inputs(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is None:
        dimensions = DEFAULT_EMBEDDING_DIMENSIONS
    elif isinstance(dimensions, bool) or not isinstance(dimensions, int) or not (
            1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS):
        raise RequestError(400, f"'dimensions' must be a whole number from 1 to {MAX_EMBEDDING_DIMENSIONS}",
                           code="invalid_value", param="dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestError(400, f"'encoding_format' must be 'float' or 'base64', got {encoding!r}",
                           code="invalid_value", param="encoding_format")
    return EmbeddingRequest(inputs=inputs, prompt_tokens=prompt_tokens, dimensions=dimensions,
                            base64=encoding == "base64")
