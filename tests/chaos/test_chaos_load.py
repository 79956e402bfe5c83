"""The chaos load: reading a stream (complete only with `data: [DONE]` and no error event, whatever the byte
splits), the plan built from stack.json with each client's workload, and the recorder against a fake router
that answers whole, streams, cuts streams and sends error events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from harness.load import LoadPlan, LoadRecorder, StreamReader, plan_for_stack, read_stream, reported_output_tokens
from harness.timeline import RequestRecord
from meridian_common.workload import REALISTIC, TINY, WorkloadConfig, WorkloadOverrides


def _chunk(content: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    message = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}], **extra}
    return b"data: " + json.dumps(message).encode() + b"\n\n"


ROLE = b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n'
USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}}\n\n'
DONE = b"data: [DONE]\n\n"
COMPLETE = ROLE + _chunk(" a") + _chunk(" b") + _chunk(" c") + _chunk(finish_reason="stop") + USAGE + DONE


@pytest.mark.parametrize(
    ("payload", "error", "content_chunks", "output_tokens"),
    [
        (COMPLETE, None, 3, 7),
        (ROLE + _chunk(" a") + _chunk(" b") + DONE, None, 2, 2),  # no usage: the content chunks
        (COMPLETE.replace(b"\n\n", b"\r\n\r\n"), None, 3, 7),
        (b": keep-alive\n\n" + COMPLETE, None, 3, 7),
        (COMPLETE[:-1], None, 3, 7),  # the last line needs no newline
        (ROLE + _chunk(" a") + _chunk(" b"), "stream cut before data: [DONE] after 2 content chunks", 2, 2),
        (b"", "stream cut before data: [DONE] after 0 content chunks", 0, 0),
        (ROLE + _chunk(" a") + b'data: {"error": {"message": "backend went away", "code": 502}}\n\n' + DONE,
         "error event in the stream: backend went away", 1, 1),
        (ROLE + b"event: error\ndata: {\"detail\": \"overloaded\"}\n\n" + DONE,
         "error event in the stream: {'detail': 'overloaded'}", 0, 0),
        (ROLE + b"data: {not json\n\n" + DONE, "malformed stream event: {not json", 0, 0),
        (DONE + _chunk(" late"), None, 0, 0),  # nothing after [DONE] counts
    ],
)
def test_read_stream(payload: bytes, error: str | None, content_chunks: int, output_tokens: int) -> None:
    outcome = read_stream(payload)
    assert (outcome.error, outcome.content_chunks, outcome.output_tokens) == (error, content_chunks, output_tokens)
    assert outcome.ok == (error is None)


def test_finish_reasons_and_resumes_are_counted() -> None:
    finish = b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n\n'
    outcome = read_stream(ROLE + _chunk(" a") + b": meridian resumed on b after 1 tokens from a (closed)\n\n"
                          + _chunk(" b") + finish + DONE)
    assert (outcome.finish_reasons, outcome.resumes, outcome.ok) == (1, 1, True)
    assert read_stream(COMPLETE).resumes == 0


def test_a_completions_stream_counts_its_text_chunks() -> None:
    text = b'data: {"choices": [{"index": 0, "text": " once"}]}\n\ndata: {"choices": [{"text": " upon"}]}\n\n'
    assert read_stream(text + DONE).content_chunks == 2


@given(st.lists(st.integers(1, len(COMPLETE) - 1), max_size=12), st.integers(0, len(COMPLETE)))
def test_splitting_the_bytes_anywhere_changes_nothing(cuts: list[int], end: int) -> None:
    payload = COMPLETE[:end]
    whole = read_stream(payload)
    reader = StreamReader()
    bounds = [0, *sorted(c for c in cuts if c < len(payload)), len(payload)]
    for start, stop in zip(bounds, bounds[1:], strict=False):
        reader.feed(payload[start:stop])
    assert reader.finish() == whole


@pytest.mark.parametrize(
    ("message", "expected"),
    [({"usage": {"completion_tokens": 12}}, 12), ({"eval_count": 9}, 9), ({"usage": None}, None),
     ({"usage": {"completion_tokens": True}}, None), ([], None), (None, None)],
)
def test_reported_output_tokens(message: Any, expected: int | None) -> None:
    assert reported_output_tokens(message) == expected


def test_old_records_keep_their_meaning() -> None:
    record = RequestRecord(0.0, 0.1, "c", "eu", "eu", 200, 100.0)
    assert record.ok and not record.streamed and record.ttft_ms is None and record.output_tokens is None
    assert not RequestRecord(0.0, 0.1, "c", "eu", "eu", 200, 100.0, error="stream cut").ok


# --- the plan --------------------------------------------------------------------------------------------------

STACK: dict[str, Any] = {
    "backends": {"b1": {"model": "m"}, "b2": {"model": "a-model"}},
    "routers": {"eu": ["http://127.0.0.1:1"], "us": ["http://127.0.0.1:2"]},
    "clients": {"paris": {"region": "eu", "requests_per_s": 1, "workload": TINY.model_dump(mode="json")},
                "boston": {"region": "us", "requests_per_s": 1}},
}


def test_the_plan_gives_every_client_its_own_workload() -> None:
    plan = plan_for_stack(STACK, workers_per_client=3)
    assert plan.model == "a-model" and plan.workers_per_client == 3
    assert plan.clients == {"paris": "eu", "boston": "us"}
    assert plan.workload_of("paris") == TINY and plan.workload_of("boston") == REALISTIC


def test_overrides_reach_every_client() -> None:
    plan = plan_for_stack(STACK, WorkloadOverrides(stream_share=1.0))
    assert {plan.workload_of(c).stream_share for c in plan.clients} == {1.0}
    assert plan.workload_of("paris").answer_tokens_max == TINY.answer_tokens_max


def test_a_topology_without_clients_gets_one_per_region() -> None:
    plan = plan_for_stack({**STACK, "clients": {}}, WorkloadOverrides(tiny=True))
    assert plan.clients == {"client-eu": "eu", "client-us": "us"}
    assert plan.workload_of("client-eu") == TINY


# --- the recorder against a fake router ------------------------------------------------------------------------

def _router(mode: str) -> web.Application:
    """A router whose streams complete, stop short, or carry an error event; whole answers report usage."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        headers = {"x-meridian-backend": "sim-a", "x-meridian-region": "eu", "x-meridian-table-version": "4"}
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 5}},
                                     headers=headers)
        response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(ROLE)
        await asyncio.sleep(0.01)
        await response.write(_chunk(" a") + _chunk(" b"))
        if mode == "error":
            await response.write(b'data: {"error": {"message": "upstream failed"}}\n\n')
        if mode != "cut":
            await response.write(USAGE + DONE)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def _record(mode: str, workload: WorkloadConfig, *, extra: WorkloadConfig | None = None,
                  requests_per_worker: int = 4) -> list[RequestRecord]:
    """What one client's worker records against a fake router answering in `mode`; with `extra`, two more
    workers sending that workload into the same records."""
    server = TestServer(_router(mode), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    stack = {"routers": {"eu": [url]}, "regions": {"eu": {"rtt_ms": {"eu": 0}}}}
    plan = LoadPlan(model="m", clients={"paris": "eu"}, workload=workload, workers_per_client=1, think_ms=0,
                    max_requests_per_worker=requests_per_worker)
    recorder = LoadRecorder(plan, stack, clock=lambda: 0.0)
    runs = [recorder.run(asyncio.Event())]
    if extra is not None:
        runs.append(recorder.run_extra(extra, 2, asyncio.Event(), label="long"))
    try:
        await asyncio.wait_for(asyncio.gather(*runs), timeout=20)
    finally:
        await server.close()
    return recorder.records


@pytest.mark.parametrize(
    ("mode", "ok", "error"),
    [("complete", True, None), ("cut", False, "stream cut before data: [DONE]"),
     ("error", False, "error event in the stream: upstream failed")],
)
def test_streams_are_recorded_with_their_outcome(mode: str, ok: bool, error: str | None) -> None:
    records = asyncio.run(_record(mode, REALISTIC.model_copy(update={"stream_share": 1.0})))
    assert len(records) == 4
    for record in records:
        assert record.streamed and record.status == 200 and record.ok is ok
        assert record.client == "paris" and record.backend == "sim-a" and record.table_version == 4
        assert record.ttft_ms is not None and 0 < record.ttft_ms <= record.latency_ms
        assert record.output_tokens == (7 if mode == "complete" else 2)
        assert (record.error or "").startswith(error or "")


def test_whole_answers_are_recorded_with_their_usage() -> None:
    records = asyncio.run(_record("complete", TINY))
    assert [(r.ok, r.streamed, r.ttft_ms, r.output_tokens) for r in records] == [(True, False, None, 5)] * 4


def test_extra_workers_send_their_own_workload_into_the_same_records() -> None:
    long = TINY.model_copy(update={"prompt_tokens_median": 20_000, "prompt_tokens_max": 32_000})
    records = asyncio.run(_record("complete", TINY, extra=long, requests_per_worker=3))
    sizes = sorted(r.prompt_tokens or 0 for r in records)
    assert len(records) == 9 and all(r.client == "paris" and r.ok for r in records)
    assert max(sizes[:3]) <= TINY.prompt_tokens_max and min(sizes[3:]) >= 10_000
