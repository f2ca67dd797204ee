"""The endpoint of the HTTP benchmark: sleeps ``--delay`` seconds per request, counts rows.

``python -m benchmarks.http_server --delay 0.02`` prints its port on the first line of stdout and
serves until killed. ``POST /ingest`` takes a JSON array, NDJSON or one JSON object; rows are
counted by their ``"id":`` members (no parsing: the server shares the machine with the client).
A request whose ``Idempotency-Key`` was accepted before is answered 200 and not counted again.
``GET /stats`` returns the counters as JSON, ``POST /reset`` zeroes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    stats = {"requests": 0, "rows": 0, "replays": 0, "id_sum": 0}
    keys: set[str] = set()

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(args.delay)
        stats["requests"] += 1
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            if key in keys:
                stats["replays"] += 1
                return web.Response(text="replayed")
            keys.add(key)
        stats["rows"] += body.count(b'"id":')
        return web.Response(text="ok")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(request: web.Request) -> web.Response:
        for k in stats:
            stats[k] = 0
        keys.clear()
        return web.json_response(stats)

    async def serve() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/ingest", ingest)
        app.router.add_get("/stats", get_stats)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()
