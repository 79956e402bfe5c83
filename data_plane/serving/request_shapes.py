"""The OpenAI request fields the router reads (model, stream, max_tokens, temperature, and the prompt: chat
messages, a completion's prompt, embedding input), checked as they are decoded into `ParsedRequest`.

Only those fields become Python objects: every other field stays the bytes the client sent and is forwarded as
it is, so a body of a million tiny objects costs its bytes, not a million objects, and is refused at the first
one that is malformed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import msgspec

from data_plane.serving.usage import estimate_tokens

Role = Literal["system", "user", "assistant", "tool", "developer", "function"]
ROLES: tuple[str, ...] = get_args(Role)

# The field each endpoint cannot do without: the prompt the router estimates tokens from.
PROMPT_FIELD = {"chat/completions": "messages", "completions": "prompt", "embeddings": "input"}


class InvalidRequest(Exception):
    """A request body that does not have OpenAI's shape: `param` is the path of the field at fault
    (`messages[2].content[0].text`), `code` OpenAI's error code."""

    def __init__(self, message: str, *, param: str | None, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


# gc=False: these never hold a cycle, and a million of them should not make the collector walk them.
class _Part(msgspec.Struct, gc=False):
    type: str
    text: str | msgspec.UnsetType = msgspec.UNSET


class _Message(msgspec.Struct, gc=False):
    role: Role
    content: str | list[_Part] | None | msgspec.UnsetType = msgspec.UNSET
    tool_calls: list[msgspec.Raw] | None = None
    function_call: dict[str, msgspec.Raw] | None = None


_TOKEN_LIMIT = 2**31 - 1
_MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=_TOKEN_LIMIT)] | None
# A string, or a list of strings, of token ids, or of token id lists; one kind per list, checked after decoding.
_TextOrTokens = str | Annotated[list[str | int | list[int]], msgspec.Meta(min_length=1)]


class _StreamOptions(msgspec.Struct, gc=False):
    include_usage: bool | None = None


class _Read(msgspec.Struct, gc=False, kw_only=True):
    """The fields every endpoint reads; any other field is skipped, not built."""

    model: str | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: _MaxTokens = None
    max_completion_tokens: _MaxTokens = None
    temperature: float | None = None


class _ChatRead(_Read, kw_only=True):
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]


class _CompletionRead(_Read, kw_only=True):
    prompt: _TextOrTokens


class _EmbeddingRead(_Read, kw_only=True):
    input: _TextOrTokens


class _ModelOnly(msgspec.Struct):
    model: str | None = None


_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_READERS: dict[str, msgspec.json.Decoder[Any]] = {
    "chat/completions": msgspec.json.Decoder(_ChatRead),
    "completions": msgspec.json.Decoder(_CompletionRead),
    "embeddings": msgspec.json.Decoder(_EmbeddingRead),
}
_MODEL_ONLY = msgspec.json.Decoder(_ModelOnly)
_OPTIONAL_TEXT = msgspec.json.Decoder(str | None)
_OPTIONS = msgspec.json.Decoder(dict[str, msgspec.Raw] | None)
_ENCODER = msgspec.json.Encoder()

_PROBLEM_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_WRONG_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")


class RequestBody:
    """A request's top-level fields as the client sent them, and the body a backend gets: the same with its
    served model name (and, for a stream whose client did not ask for usage, `stream_options.include_usage`),
    encoded once per name and variant (a retry on another deployment of that backend model re-sends it)."""

    __slots__ = ("fields", "_received", "_model", "_upstream")

    def __init__(self, received: bytes | bytearray, fields: dict[str, msgspec.Raw], model: str) -> None:
        self._received = received
        self.fields = fields
        self._model = model
        self._upstream: dict[tuple[str, bool], bytes | bytearray] = {}

    def for_model(self, served_model: str, *, ask_usage: bool = False) -> bytes | bytearray:
        """`ask_usage`: with `"stream_options": {"include_usage": true}`, merged into the client's options."""
        if served_model == self._model and not ask_usage:
            return self._received
        body = self._upstream.get((served_model, ask_usage))
        if body is None:
            fields: dict[str, Any] = {"model": served_model, **{k: v for k, v in self.fields.items() if k != "model"}}
            if ask_usage:
                options = _OPTIONS.decode(self.fields.get("stream_options", b"null")) or {}
                fields["stream_options"] = {**options, "include_usage": True}
            body = self._upstream[(served_model, ask_usage)] = _ENCODER.encode(fields)
        return body

    def without(self, names: Collection[str]) -> bytes:
        """The body encoded without the top-level fields `names`."""
        return _ENCODER.encode({k: v for k, v in self.fields.items() if k not in names})

    def digest(self, prefix: bytes, ignored: Collection[str]) -> str:
        """sha256 of `prefix` and the fields (sorted by name, values as sent) but the `ignored` ones."""
        digest = hashlib.sha256(prefix)
        for name in sorted(self.fields):
            if name not in ignored:
                digest.update(_ENCODER.encode(name))
                digest.update(b":")
                digest.update(self.fields[name])
                digest.update(b",")
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: str
    body: RequestBody
    model: str
    streaming: bool
    temperature: float | None
    estimated_prompt_tokens: int
    max_output_tokens: int | None  # max_completion_tokens or max_tokens; None when the request sets neither
    prompt_parts: tuple[str, ...] = ()  # the prompt's text in order (chat: role and content), for prefix hashing
    usage_requested: bool = False  # a stream whose client asked for its usage chunk (stream_options.include_usage)

    @property
    def asks_backend_usage(self) -> bool:
        """A stream whose client did not ask for usage: the router asks the backend for it, to count what was
        reported rather than estimate, and keeps the usage chunk from the client."""
        return self.streaming and not self.usage_requested and self.endpoint != "embeddings"


def parse_request(endpoint: str, received: bytes | bytearray) -> ParsedRequest:
    """The request `received` for `endpoint` (a key of PROMPT_FIELD); raises InvalidRequest when the body is
    not JSON, not an object, or a field the router reads does not have OpenAI's shape."""
    try:
        fields = _FIELDS.decode(received)
    except msgspec.ValidationError as error:
        raise InvalidRequest("request body must be a JSON object", param=None, code="invalid_json") from error
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}", param=None, code="invalid_json") from error
    try:
        read = _READERS[endpoint].decode(received)
    except msgspec.ValidationError as error:
        raise _invalid("", str(error)) from error
    if not read.model:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_model")
    parts: tuple[str, ...] = ()
    if endpoint == "chat/completions":
        tokens = _chat_tokens(read.messages)
        parts = _chat_parts(read.messages)
    else:
        name = PROMPT_FIELD[endpoint]
        prompt = getattr(read, name)
        tokens = _text_or_token_count(name, prompt)
        if endpoint == "completions" and isinstance(prompt, str):
            parts = (prompt,)
    max_tokens = read.max_completion_tokens if read.max_completion_tokens is not None else read.max_tokens
    return ParsedRequest(
        endpoint=endpoint,
        body=RequestBody(received, fields, read.model),
        model=read.model,
        streaming=bool(read.stream),
        temperature=read.temperature,
        estimated_prompt_tokens=tokens,
        max_output_tokens=max_tokens,
        prompt_parts=parts,
        usage_requested=bool(read.stream and read.stream_options and read.stream_options.include_usage),
    )


def optional_text(fields: dict[str, msgspec.Raw], name: str) -> str | None:
    """Top-level field `name` as a string, None when absent or null; InvalidRequest naming it otherwise."""
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return _OPTIONAL_TEXT.decode(raw)
    except msgspec.ValidationError as error:
        raise _invalid(name, str(error)) from error


def body_model(received: bytes) -> str | None:
    """The model a stored body names, read without decoding the rest of it."""
    try:
        return _MODEL_ONLY.decode(received).model
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _invalid(name: str, text: str) -> InvalidRequest:
    """msgspec's `problem - at `$path`` about field `name` ("" for the whole body) as OpenAI words it, with the
    field's whole path as `param`."""
    match = _PROBLEM_AT.match(text)
    problem, path = (match["problem"], match["path"] or "") if match else (text, "")
    param = (name + path).removeprefix(".")
    if missing := _MISSING.match(problem):
        param = f"{param}.{missing['name']}".removeprefix(".")
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    if wrong := _WRONG_TYPE.match(problem):
        return InvalidRequest(f"Invalid type for '{param}': expected {wrong['expected']}, got {wrong['got']}.",
                              param=param, code="invalid_type")
    hint = f"; expected one of {', '.join(ROLES)}" if param.endswith(".role") else ""
    return InvalidRequest(f"Invalid value for '{param}': {problem[:1].lower()}{problem[1:]}{hint}.", param=param,
                          code="invalid_value")


def _chat_tokens(messages: list[_Message]) -> int:
    """The estimated tokens of the messages' text; InvalidRequest for what the decoder cannot check: a text part
    without text, a message without content that is not an assistant's tool call."""
    chars = 0
    for index, message in enumerate(messages):
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part_index, part in enumerate(content):
                if part.type == "text":
                    if isinstance(part.text, msgspec.UnsetType):
                        param = f"messages[{index}].content[{part_index}].text"
                        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                                             code="missing_required_parameter")
                    chars += len(part.text)
        elif message.role != "assistant" or not (message.tool_calls or message.function_call):
            param = f"messages[{index}].content"
            raise InvalidRequest(f"Invalid value for '{param}': only an assistant message with tool_calls or "
                                 "function_call may have no content.", param=param, code="invalid_value")
    return estimate_tokens(chars)


def _chat_parts(messages: list[_Message]) -> tuple[str, ...]:
    """The messages' text as a chat template lays it out (role, then content), references, not copies."""
    parts: list[str] = []
    for message in messages:
        parts += (message.role, "\n")
        content = message.content
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += (part.text for part in content if isinstance(part.text, str))
        parts.append("\n")
    return tuple(parts)


def _text_or_token_count(name: str, value: str | list[str | int | list[int]]) -> int:
    """A prompt or input's estimated tokens: its characters', or the token ids it lists."""
    if isinstance(value, str):
        return estimate_tokens(len(value))
    kind = type(value[0])
    chars = tokens = 0
    for index, item in enumerate(value):
        if type(item) is not kind:
            param = f"{name}[{index}]"
            raise InvalidRequest(f"Invalid type for '{param}': every item of '{name}' must be of one kind (strings, "
                                 "token ids or lists of token ids).", param=param, code="invalid_type")
        if isinstance(item, str):
            chars += len(item)
        else:
            tokens += len(item) if isinstance(item, list) else 1
    return estimate_tokens(chars) + tokens
