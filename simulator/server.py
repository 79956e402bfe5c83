"""The simulator's aiohttp shell: parses a request, admits it through the concurrency slots and the KV cache,
waits as the profile's time model says and writes the bodies that `responses` builds."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from meridian_common.aiohttp_serving import serve_until_cancelled
from meridian_common.logging_setup import event
from simulator.live_state import SimulatorState
from simulator.metrics import build_registry
from simulator.prefix_cache import block_hashes
from simulator.request_parsing import (
    GenerationKind,
    GenerationRequest,
    RequestError,
    decode_json_body,
    parse_embedding,
    parse_generation,
)
from simulator.responses import (
    Generation,
    StreamEvents,
    completion_body,
    embeddings_body,
    error_body,
    model_card,
    models_body,
    stream_events,
)
from simulator.settings import SettingsError, SimulatorSettings, with_runtime_changes
from simulator.tokens import VOCABULARY, continuation_start, generated_tokens

log = logging.getLogger(__name__)

SIMULATOR = web.AppKey("simulator", SimulatorState)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)

# Embedding batches can be large; anything past this is refused with 413 before it is read.
MAX_BODY_BYTES = 32 * 1024 * 1024
# A simulator stopping mid-stream has nothing worth saving: give in-flight requests a moment, not a minute.
SHUTDOWN_TIMEOUT_S = 0.5
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(status: int, message: str, *, code: str | None, param: str | None = None) -> web.Response:
    body = error_body(status, message, code=code, param=param)
    return web.Response(status=status, body=body, content_type=_JSON)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as error:
        return _error_response(error.status, error.message, code=error.code, param=error.param)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error_response(error.status, f"{error.reason}: {request.method} {request.path}",
                               code=error.reason.lower().replace(" ", "_"))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception(event("unhandled_error", method=request.method, path=request.path))
        return _error_response(500, "the simulator failed on this request; see its log",
                               code="internal_error")


@web.middleware
async def api_key_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With an api key set, a /v1 request without it is refused before anything else, as vLLM does."""
    state = request.app[SIMULATOR]
    key = state.settings.api_key
    if key is not None and request.path.startswith("/v1/"):
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            state.rejected += 1
            raise RequestError(401, "invalid api key: send Authorization: Bearer <key>", code="invalid_api_key")
    return await handler(request)


async def _read_body(request: web.Request) -> dict[str, object]:
    return decode_json_body(await request.read())


class _Slot:
    """Holds one of the server's concurrency slots and `kv_tokens` of its KV cache for a block, counting a
    client that leaves meanwhile. The amount is fixed at entry, so a profile changed meanwhile releases what
    was reserved."""

    __slots__ = ("_kv_tokens", "_state")

    def __init__(self, state: SimulatorState, kv_tokens: int = 0) -> None:
        self._state = state
        self._kv_tokens = kv_tokens

    async def __aenter__(self) -> None:
        try:
            await self._state.admission.acquire(self._kv_tokens)
        except asyncio.CancelledError:
            self._state.cancelled += 1
            raise

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: object) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._state.cancelled += 1
        self._state.admission.release(self._kv_tokens)


def _simulated_failure(state: SimulatorState) -> web.Response | None:
    """The refusal a saturated server (429) or the error a failing one (500) sends before any byte of an
    answer, when the draws say so."""
    settings = state.settings
    if state.draw_throttle():
        state.throttled += 1
        response = _error_response(429, f"simulated saturation (throttle_rate={settings.throttle_rate})",
                                   code="rate_limit_exceeded")
        if settings.retry_after_s is not None:
            response.headers["Retry-After"] = f"{settings.retry_after_s:g}"
        return response
    if not state.draw_error():
        return None
    state.errors += 1
    return _error_response(500, f"simulated backend failure (error_rate={settings.error_rate})",
                           code="simulated_error")


def _generation_handler(kind: GenerationKind) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[SIMULATOR]
        arrived_at = asyncio.get_running_loop().time()
        try:
            parsed = parse_generation(await _read_body(request), kind, state.settings.model,
                                      state.draw_output_tokens(), state.settings.chat_continuation)
        except RequestError:
            state.rejected += 1
            raise
        failure = _simulated_failure(state)
        if failure is not None:
            return failure
        # Hashed before queueing, looked up at admission: the wait costs no work when the slot frees.
        hashes = block_hashes(parsed.cache_text) if state.prefix_cache.enabled else ()
        async with _Slot(state, state.kv_tokens_for(parsed.prompt_tokens, parsed.output_tokens)):
            return await _generate(request, state, parsed, hashes, arrived_at)

    return handle


# A whole answer's decoding sleeps in blocks of this many tokens, re-reading the load between blocks.
_DECODE_BLOCK_TOKENS = 16


def _record_served(state: SimulatorState, arrived_at: float, now: float, generated: int) -> None:
    state.served += 1
    state.engine.generation_tokens += generated
    state.engine.e2e_s.observe(now - arrived_at)


async def _generate(request: web.Request, state: SimulatorState, parsed: GenerationRequest,
                    hashes: tuple[bytes, ...], arrived_at: float) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    admitted_at = loop.time()
    settings = state.settings  # read after admission: a change made while this request queued applies to it
    cached = state.admit_prompt(parsed.prompt_tokens, hashes)
    multipliers = state.draw_latency()
    ttft_s = state.ttft_s(parsed.prompt_tokens, cached, multipliers)
    engine = state.engine
    # Drawn even for a continuation, so that a seeded run's sequence does not depend on what its prompts say.
    start = state.rng.randrange(len(VOCABULARY))
    following = continuation_start(parsed.continues)
    generation = Generation(
        id=state.next_id(parsed.kind), created=int(time.time()), model=settings.model, kind=parsed.kind,
        tokens=generated_tokens(start if following is None else following, parsed.output_tokens),
        prompt_tokens=parsed.prompt_tokens, finish_reason=parsed.finish_reason,
        usage_format=settings.usage_format,
    )
    if not parsed.stream:
        if ttft_s > 0:
            await asyncio.sleep(ttft_s)
        engine.ttft_s.observe(loop.time() - arrived_at)
        remaining = parsed.output_tokens - 1
        context = parsed.prompt_tokens + 1
        while remaining > 0:
            block = min(remaining, _DECODE_BLOCK_TOKENS)
            # The block's context is taken at its start: close enough for 16 tokens, and one read per block.
            delay_s = state.itl_s(multipliers.jitter, context) * block
            started = loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            engine.itl_s.observe((loop.time() - started) / block, block)
            remaining -= block
            context += block
        _record_served(state, arrived_at, loop.time(), parsed.output_tokens)
        return web.Response(body=completion_body(generation), content_type=_JSON)
    events = stream_events(generation, include_usage=parsed.include_usage)
    cut_after = state.draw_cut(parsed.output_tokens)
    if settings.itl_ms == 0 and cut_after is None:
        # Nothing to pace: one write of the whole stream is what "as fast as it can" means here.
        if ttft_s > 0:
            await asyncio.sleep(ttft_s)
        now = loop.time()
        engine.ttft_s.observe(now - arrived_at)
        engine.itl_s.observe(0.0, parsed.output_tokens - 1)
        _record_served(state, arrived_at, now, parsed.output_tokens)
        return web.Response(body=events.whole(), headers=_SSE_HEADERS)
    return await _paced_stream(request, state, events, admitted_at + ttft_s, multipliers.jitter,
                               parsed.prompt_tokens, arrived_at, cut_after)


async def _paced_stream(request: web.Request, state: SimulatorState, events: StreamEvents,
                        first_token_at: float, jitter: float, prompt_tokens: int,
                        arrived_at: float, cut_after: int | None = None) -> web.StreamResponse:
    """Writes the first token at `first_token_at` and each next one an inter-token latency later, taken at the
    load and context of that moment (deadlines, not sleeps, so that the pace does not drift); a client that
    goes away ends the generation at its next write. With `cut_after`, the stream dies after that many tokens:
    half of the next event, then the connection closed without the chunked body's end."""
    loop = asyncio.get_running_loop()
    engine = state.engine
    response = web.StreamResponse(headers=_SSE_HEADERS)
    state.streaming += 1
    try:
        await response.prepare(request)
        last = len(events.tokens) - 1
        due_at = first_token_at
        written_at = arrived_at
        for index, token in enumerate(events.tokens):
            if index > 0:
                # The context of token `index`: the prompt and the `index` tokens generated before it.
                due_at += state.itl_s(jitter, prompt_tokens + index)
            delay_s = due_at - loop.time()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if index == cut_after:
                await response.write(token[:len(token) // 2])
                state.cut += 1
                _close_abruptly(request)
                return response
            piece = events.head + token if index == 0 else token
            await response.write(piece + events.tail if index == last else piece)
            now = loop.time()
            (engine.ttft_s if index == 0 else engine.itl_s).observe(now - written_at)
            written_at = now
            engine.generation_tokens += 1
    except ConnectionResetError:
        state.cancelled += 1
        return response
    finally:
        state.streaming -= 1
    _record_served(state, arrived_at, loop.time(), 0)  # its tokens were counted as they were written
    return response


def _close_abruptly(request: web.Request) -> None:
    """Closes the connection under a stream being written, as a backend that crashes does; what was written is
    flushed first, so the client gets exactly the half event."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def embeddings(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    try:
        parsed = parse_embedding(await _read_body(request), state.settings.model)
    except RequestError:
        state.rejected += 1
        raise
    failure = _simulated_failure(state)
    if failure is not None:
        return failure
    # Embeddings are one forward pass: they hold a slot for the time to first token and no longer.
    async with _Slot(state):
        settings = state.settings
        if settings.ttft_ms > 0:
            await asyncio.sleep(settings.ttft_ms * state.draw_latency().ttft / 1000.0)
    state.served += 1
    body = embeddings_body(parsed, settings.model, settings.usage_format)
    return web.Response(body=body, content_type=_JSON)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    return web.Response(body=models_body(state.settings.model, state.started_unix), content_type=_JSON)


async def retrieve_model(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    name = request.match_info["model"]
    if name != state.settings.model:
        raise RequestError(404, f"the model {name!r} does not exist; this server serves "
                           f"{state.settings.model!r}", code="model_not_found", param="model")
    return web.json_response(model_card(name, state.started_unix))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_sim_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].view())


async def post_sim_config(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    body = await _read_body(request)
    try:
        changed = with_runtime_changes(state.settings, body)
    except SettingsError as error:
        raise RequestError(400, f"invalid simulator setting {error}", code="invalid_value",
                           param=error.field) from None
    state.apply(changed)
    log.info(event("sim_config_changed", **{key: body[key] for key in sorted(body)}))
    return web.json_response(state.view())


def create_app(settings: SimulatorSettings) -> web.Application:
    app = web.Application(middlewares=[openai_errors, api_key_check], client_max_size=MAX_BODY_BYTES)
    state = SimulatorState(settings, started_unix=int(time.time()))
    app[SIMULATOR] = state
    app[METRICS_REGISTRY] = build_registry(state)
    app.router.add_post("/v1/chat/completions", _generation_handler(GenerationKind.CHAT))
    app.router.add_post("/v1/completions", _generation_handler(GenerationKind.COMPLETION))
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", retrieve_model)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/sim/config", get_sim_config)
    app.router.add_post("/sim/config", post_sim_config)
    return app


async def serve(app: web.Application, host: str, port: int, *, port_file: Path | None = None) -> None:
    """Runs until cancelled. Handlers are cancelled when their client disconnects, so a request waiting
    for a slot or sleeping before its first token leaves at once instead of at its next write."""
    settings = app[SIMULATOR].settings
    log.info(event("starting", server="sim-backend", model=settings.model, profile=settings.profile.value,
                   ttft_ms=settings.ttft_ms, itl_ms=settings.itl_ms, capacity=settings.capacity,
                   error_rate=settings.error_rate, usage_format=settings.usage_format.value,
                   throttle_rate=settings.throttle_rate, api_key_required=settings.api_key is not None,
                   prefill_ms_per_1k=settings.prefill_ms_per_1k, kv_cache_tokens=settings.kv_cache_tokens,
                   prefix_cache_blocks=settings.prefix_cache_blocks))
    await serve_until_cancelled(app, host, port, port_file=port_file, name="sim-backend",
                                handler_cancellation=True, shutdown_timeout_s=SHUTDOWN_TIMEOUT_S)
