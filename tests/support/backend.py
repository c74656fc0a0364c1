"""An application backend for proxy tests: a real HTTP server on loopback, in a thread of its own.

Every request is recorded (path, headers, JSON body). What it answers is decided per request by the
test's ``answer(path, body)`` function: a JSON object (200), or a :class:`Reply` for a status, a raw
body, or a delay (beyond a proxy's timeout, say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.support.loop_thread import LoopThread
from tests.support.server import free_port


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


Answer = Callable[[str, Any], dict[str, Any] | Reply]


class Backend(LoopThread):
    name = "backend"

    def __init__(self, answer: Answer, port: int | None = None) -> None:
        super().__init__()
        self.answer = answer
        self.port = port or free_port()
        self.seen: list[Seen] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Backend:
        super().__enter__()
        return self

    async def serve(self, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.ready()
        await stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw
        self.seen.append(Seen(request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        answer = self.answer(request.path, body)
        if isinstance(answer, Reply):
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return web.Response(status=answer.status, body=answer.body, content_type="application/json")
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
