"""The OpenAI-compatible endpoints: completions, chat, embeddings, models, and the routing dry run."""

from __future__ import annotations

import time
from functools import partial

from aiohttp import web

from data_plane.api.model_cards import model_card
from data_plane.app_keys import BODY_INTAKE, CONFIG, CREDENTIALS, SERVING, STATE
from data_plane.serving.pipeline import serve_parsed
from data_plane.serving.route_planning import decide_model, decision_json, model_chain, model_named


async def completion(request: web.Request, endpoint: str) -> web.StreamResponse:
    identity = request.app[CREDENTIALS].authenticate(request)
    async with request.app[BODY_INTAKE].receive(request, endpoint) as parsed:
        return await serve_parsed(request.app[SERVING], parsed, request.headers, identity=identity, request=request)


async def route_dry_run(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].authenticate(request)
    state = request.app[STATE]
    async with request.app[BODY_INTAKE].receive(request, "chat/completions") as parsed:
        now = time.monotonic()
        decisions = [decide_model(state, model, route_request, now)
                     for model, route_request in model_chain(state, parsed, request.headers)]
    return web.json_response({
        "region": request.app[CONFIG].region,
        "table_version": state.table.version,
        "decisions": [decision_json(d) for d in decisions],
    })


async def list_models(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].authenticate(request)
    table = request.app[STATE].table
    created = int(table.computed_at_unix_ms / 1000)
    return web.json_response({
        "object": "list",
        "data": [model_card(table.models[name], created) for name in sorted(table.models)],
    })


async def retrieve_model(request: web.Request) -> web.Response:
    request.app[CREDENTIALS].authenticate(request)
    table = request.app[STATE].table
    model = model_named(table.models, request.match_info["model"])
    return web.json_response(model_card(model, int(table.computed_at_unix_ms / 1000)))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", partial(completion, endpoint="chat/completions"))
    app.router.add_post("/v1/completions", partial(completion, endpoint="completions"))
    app.router.add_post("/v1/embeddings", partial(completion, endpoint="embeddings"))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
    app.router.add_post("/v1/route", route_dry_run)
