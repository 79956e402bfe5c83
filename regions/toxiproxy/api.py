"""Toxiproxy's HTTP API on aiohttp: routes, status codes and bodies as Toxiproxy's api.go has them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from meridian_common.logging_setup import event
from regions.toxiproxy import api_json
from regions.toxiproxy.api_error import ApiError
from regions.toxiproxy.proxy import Proxy
from regions.toxiproxy.proxy_collection import ProxyCollection

log = logging.getLogger(__name__)

# Real Toxiproxy's release this API follows, tagged so that a client can tell the two apart.
VERSION = "2.12.0+meridian"

COLLECTION = web.AppKey("toxiproxy_collection", ProxyCollection)
LOCK = web.AppKey("toxiproxy_lock", asyncio.Lock)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _http_error(text: str, status: int) -> web.Response:
    """Go's http.Error: text/plain, nosniff, and the text with a trailing newline."""
    response = web.Response(text=text + "\n", status=status, content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _error(error: ApiError) -> web.Response:
    # Toxiproxy writes its JSON errors with http.Error too.
    return _http_error(orjson.dumps(error.to_json()).decode(), error.status)


def _proxy_json(proxy: Proxy) -> dict[str, Any]:
    return api_json.proxy_json(proxy.config(), proxy.toxics.specs())


@web.middleware
async def _stop_browsers(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Toxiproxy refuses browsers so that a web page cannot drive it (CSRF against localhost).
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return _http_error("User agent not allowed", 403)
    return await handler(request)


@web.middleware
async def _api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        # One request at a time, like Toxiproxy's collection locks: a start or stop awaits sockets.
        async with request.app[LOCK]:
            return await handler(request)
    except ApiError as error:
        if error.status >= 500:
            log.warning(event("toxiproxy.api_error", method=request.method, path=request.path, error=error.message))
        return _error(error)
    except web.HTTPNotFound:
        return _http_error("404 page not found", 404)  # Go's http.NotFound, gorilla/mux's default
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405)  # gorilla/mux writes the status alone
    except web.HTTPException:
        raise
    except Exception as error:
        # Toxiproxy answers any other failure as a 500 in its error shape.
        log.exception(event("toxiproxy.api_failure", method=request.method, path=request.path))
        return _error(ApiError(str(error) or type(error).__name__, 500))


async def _body(request: web.Request) -> Any:
    return api_json.parse_body(await request.read())


async def proxy_index(request: web.Request) -> web.Response:
    proxies = request.app[COLLECTION].all()
    return _json({proxy.name: _proxy_json(proxy) for proxy in sorted(proxies, key=lambda p: p.name)})


async def proxy_create(request: web.Request) -> web.Response:
    config = api_json.parse_proxy_create(await _body(request))
    proxy = await request.app[COLLECTION].add(config)
    return _json(_proxy_json(proxy), status=201)


async def populate(request: web.Request) -> web.Response:
    try:
        configs = api_json.parse_populate(await _body(request))
    except ApiError as error:
        return _json(api_json.populate_json([], error), status=error.status)
    proxies, error = await request.app[COLLECTION].populate(configs)
    body = api_json.populate_json([_proxy_json(proxy) for proxy in proxies], error)
    return _json(body, status=error.status if error else 201)


async def reset(request: web.Request) -> web.Response:
    await request.app[COLLECTION].reset()
    return web.Response(status=204)


async def proxy_show(request: web.Request) -> web.Response:
    return _json(_proxy_json(request.app[COLLECTION].get(request.match_info["proxy"])))


async def proxy_update(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    await proxy.update(api_json.parse_proxy_update(await _body(request), proxy.config()))
    return _json(_proxy_json(proxy))


async def proxy_delete(request: web.Request) -> web.Response:
    await request.app[COLLECTION].remove(request.match_info["proxy"])
    return web.Response(status=204)


async def toxic_index(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    specs = api_json.toxics_in_api_order(proxy.toxics.specs())
    return _json([api_json.toxic_json(spec) for spec in specs])


async def toxic_create(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    spec = proxy.toxics.add_json(await _body(request))
    log.info(event("toxiproxy.toxic_added", proxy=proxy.name, toxic=spec.name, type=spec.type, stream=spec.stream))
    return _json(api_json.toxic_json(spec))  # 200, not 201: Toxiproxy never sets the status here


async def toxic_show(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    return _json(api_json.toxic_json(proxy.toxics.get(request.match_info["toxic"])))


async def toxic_update(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    name = request.match_info["toxic"]
    proxy.toxics.get(name)  # 404 before reading the body, as Toxiproxy does
    return _json(api_json.toxic_json(proxy.toxics.update_json(name, await _body(request))))


async def toxic_delete(request: web.Request) -> web.Response:
    proxy = request.app[COLLECTION].get(request.match_info["proxy"])
    proxy.toxics.remove(request.match_info["toxic"])
    log.info(event("toxiproxy.toxic_removed", proxy=proxy.name, toxic=request.match_info["toxic"]))
    return web.Response(status=204)


async def version(request: web.Request) -> web.Response:
    return web.Response(body=f'{{"version": "{VERSION}"}}\n'.encode(),
                        headers={"Content-Type": "application/json;charset=utf-8"})


async def _proxies_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[COLLECTION].clear()


def build_app(collection: ProxyCollection) -> web.Application:
    app = web.Application(middlewares=[_stop_browsers, _api_errors])
    app[COLLECTION] = collection
    app[LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(_proxies_ctx)
    app.router.add_post("/reset", reset)
    app.router.add_get("/proxies", proxy_index, allow_head=False)
    app.router.add_post("/proxies", proxy_create)
    app.router.add_post("/populate", populate)
    app.router.add_get("/proxies/{proxy}", proxy_show, allow_head=False)
    app.router.add_post("/proxies/{proxy}", proxy_update)
    app.router.add_patch("/proxies/{proxy}", proxy_update)
    app.router.add_delete("/proxies/{proxy}", proxy_delete)
    app.router.add_get("/proxies/{proxy}/toxics", toxic_index, allow_head=False)
    app.router.add_post("/proxies/{proxy}/toxics", toxic_create)
    app.router.add_get("/proxies/{proxy}/toxics/{toxic}", toxic_show, allow_head=False)
    app.router.add_post("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    app.router.add_patch("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    app.router.add_delete("/proxies/{proxy}/toxics/{toxic}", toxic_delete)
    app.router.add_get("/version", version, allow_head=False)
    return app
