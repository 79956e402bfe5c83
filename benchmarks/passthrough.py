"""The baseline of the overhead benchmark: the thinnest useful aiohttp pass-through (one upstream, no
decision, no statistics), so the router is compared with what any aiohttp proxy costs."""

from __future__ import annotations

import argparse
from pathlib import Path

import aiohttp
from aiohttp import web

from meridian_common.aiohttp_serving import serve_until_cancelled
from meridian_common.event_loop import run

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def _forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    async with request.app[SESSION].post(request.app[UPSTREAM] + request.path_qs, data=body,
                                         headers={"Content-Type": "application/json"}) as upstream:
        if upstream.content_type == "text/event-stream":
            response = web.StreamResponse(status=upstream.status)
            response.content_type = "text/event-stream"
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        return web.Response(status=upstream.status, body=await upstream.read(),
                            content_type=upstream.content_type)


async def _session(app: web.Application) -> object:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_post("/{tail:.*}", _forward)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9100")
    parser.add_argument("--port-file", required=True, type=Path)
    args = parser.parse_args()
    return run(serve_until_cancelled(create_app(args.upstream), "127.0.0.1", 0, port_file=args.port_file,
                                     name="passthrough"))


if __name__ == "__main__":
    raise SystemExit(main())
