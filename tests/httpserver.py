"""A real HTTP endpoint for the tests of HTTP targets (``from httpserver import ApiServer``).

An ``aiohttp.web`` server on 127.0.0.1, in a thread with its own event loop, that behaves like an
API honouring idempotency keys: a request whose key was accepted before is answered 200 and not
applied again. It records what it accepted (rows by id, the key each row came under) and can be
told to misbehave: latency, scripted answers (429 with ``Retry-After``, 500…), connection resets,
requests that hang past the client's timeout, and a 400 for requests holding given row ids.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY_HEADER = "Idempotency-Key"


@dataclass
class Reply:
    """One scripted answer: a status with headers, or a reset or a hang instead."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    reset: bool = False
    hang: float = 0.0


class ApiServer:
    """The endpoint. Use as a context manager; ``url`` is its address.

    Attributes:
        rows: Accepted rows by ``id``.
        keys_of: For each row id, the keys of the requests that delivered it (accepted ones).
        requests: Every request received (including refused and replayed ones).
        replays: Requests answered from the key store (the key was accepted before).
        seen_times: ``loop.time()`` of every request, for rate checks.
    """

    def __init__(self, *, latency: float = 0.0, parse: bool = True) -> None:
        self.latency = latency
        self.parse = parse
        self.script: list[Reply] = []
        self.bad_ids: set[int] = set()
        self.rows: dict[int, dict[str, Any]] = {}
        self.keys_of: dict[int, set[str]] = {}
        self.accepted_keys: set[str] = set()
        self.requests = 0
        self.accepted_requests = 0
        self.replays = 0
        self.duplicates = 0
        self.statuses: Counter[int] = Counter()
        self.seen_times: list[float] = []
        self.headers_seen: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.keep_bodies = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.rows_received = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[Callable[[], bool], threading.Event]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    # --- Control -------------------------------------------------------------------------------

    def when(self, condition: Callable[[], bool]) -> threading.Event:
        """An event set as soon as ``condition()`` holds (checked after every request)."""
        event = threading.Event()
        with self._lock:
            if condition():
                event.set()
            else:
                self._waiters.append((condition, event))
        return event

    def __enter__(self) -> ApiServer:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test HTTP server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()
        loop.close()

    # --- The endpoint ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        loop = asyncio.get_running_loop()
        with self._lock:
            self.requests += 1
            self.seen_times.append(loop.time())
            self.headers_seen.append(dict(request.headers))
            if self.keep_bodies:
                self.bodies.append(body)
            reply = self.script.pop(0) if self.script else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if reply is not None and reply.hang:
                await asyncio.sleep(reply.hang)
            if reply is not None and reply.reset:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            if reply is not None and reply.status != 200:
                return self._answer(reply.status, reply.body, reply.headers)
            return self._apply(request, body)
        finally:
            with self._lock:
                self.in_flight -= 1
                self._notify()

    def _answer(
        self, status: int, text: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        with self._lock:
            self.statuses[status] += 1
        return web.Response(status=status, text=text, headers=headers)

    def _apply(self, request: web.Request, body: bytes) -> web.Response:
        key = request.headers.get(KEY_HEADER, "")
        if not self.parse:
            with self._lock:
                self.accepted_requests += 1
                self.rows_received += body.count(b'"id"')
            return self._answer(200, "ok")
        rows = _rows_of(body, request.headers.get("Content-Type", ""))
        bad = [r["id"] for r in rows if r.get("id") in self.bad_ids]
        if bad:
            return self._answer(400, json.dumps({"error": "invalid row", "ids": bad[:5]}))
        with self._lock:
            if key and key in self.accepted_keys:
                self.replays += 1
                self.statuses[200] += 1
                return web.Response(status=200, text="replayed")
            if key:
                self.accepted_keys.add(key)
            self.accepted_requests += 1
            self.rows_received += len(rows)
            for row in rows:
                rid = row["id"]
                if rid in self.rows:
                    self.duplicates += 1
                self.rows[rid] = row
                self.keys_of.setdefault(rid, set()).add(key)
            self.statuses[200] += 1
        return web.Response(status=200, text="ok")

    def _notify(self) -> None:
        keep = []
        for condition, event in self._waiters:
            if condition():
                event.set()
            else:
                keep.append((condition, event))
        self._waiters = keep


def _rows_of(body: bytes, content_type: str) -> list[dict[str, Any]]:
    if "ndjson" in content_type:
        return [json.loads(line) for line in body.splitlines() if line.strip()]
    value = json.loads(body)
    return value if isinstance(value, list) else [value]
