"""An application backend for proxy tests: a real HTTP server on loopback, in a thread of its own.

Every request is recorded (path, headers, JSON body). What it answers is decided per request by the
test's ``answer(path, body)`` function: a JSON object (200), or a :class:`Reply` for a status, a raw
body, or a delay (beyond a proxy's timeout, say).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

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


@dataclass
class Backend:
    answer: Answer
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="backend", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Backend:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the backend did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
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
