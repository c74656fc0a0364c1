"""router.http: pipelined API requests run side by side and are answered in request order."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

import pytest

from router import http
from router.http import Eager, HttpConnection, Request, Responder, Starter


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def get_write_buffer_size(self) -> int:
        return 0

    @property
    def text(self) -> str:
        return b"".join(self.written).decode()


class App:
    """/api/<name> is pipelined: it answers ``name`` once its future is set; /plain is answered at once."""

    def __init__(self, eager: bool = True) -> None:
        self.eager = eager
        self.futures: dict[str, asyncio.Future[str]] = {}
        self.started: list[str] = []
        self.handled: list[str] = []

    def body_limit(self, path: str) -> int:
        return 1024

    def pipelined(self, request: Request) -> Starter | None:
        if not request.path.startswith("/api/"):
            return None
        name = request.path[5:]

        def start(responder: Responder) -> Coroutine[Any, Any, None] | Eager:
            coroutine = self.serve(name, responder)
            return Eager(coroutine) if self.eager else coroutine

        return start

    async def serve(self, name: str, responder: Responder) -> None:
        self.started.append(name)
        if name == "boom":
            raise RuntimeError("handler bug")
        if name.startswith("now"):
            responder.respond(HTTPStatus.OK, name.encode())
            return
        future = self.futures[name] = asyncio.get_running_loop().create_future()
        answer = await future
        responder.respond(HTTPStatus.OK, answer.encode(), keep_alive=name != "last")

    def handle(self, request: Request, conn: HttpConnection) -> Any:
        self.handled.append(request.path)
        conn.respond(HTTPStatus.OK, b"plain")
        return None

    def upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        raise AssertionError("no upgrades here")


def requests(*paths: str) -> bytes:
    return b"".join(f"POST {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode() for p in paths)


def bodies(text: str) -> list[str]:
    return [part.rsplit("\r\n\r\n", 1)[-1] for part in text.split("HTTP/1.1 ")[1:]]


def connection(app: App) -> tuple[HttpConnection, FakeTransport]:
    conn = HttpConnection(app)  # type: ignore[arg-type]
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("eager", [True, False])
def test_pipelined_requests_run_together_and_answer_in_order(eager: bool) -> None:
    async def scenario() -> None:
        app = App(eager)
        conn, transport = connection(app)
        conn.data_received(requests("/api/a", "/api/b", "/api/c"))
        await turns()
        assert app.started == ["a", "b", "c"]  # all three at once, none waiting for another
        assert conn.busy
        app.futures["c"].set_result("C")
        app.futures["b"].set_result("B")
        await turns()
        assert transport.written == []  # a is not answered yet: nothing may overtake it
        app.futures["a"].set_result("A")
        await turns()
        assert bodies(transport.text) == ["A", "B", "C"]
        assert len(transport.written) == 1  # the three filled slots leave in one write
        assert not conn.busy and not transport.closed

    asyncio.run(scenario())


def test_answers_ready_while_dispatching_leave_in_one_write() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/now1", "/api/now2", "/api/now3"))
        assert bodies(transport.text) == ["now1", "now2", "now3"]
        assert len(transport.written) == 1

    asyncio.run(scenario())


def test_an_ordinary_request_waits_for_the_pipelined_ones_before_it() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/a", "/plain", "/api/now"))
        await turns()
        assert app.handled == [] and transport.paused
        assert app.started == ["a"]
        app.futures["a"].set_result("A")
        await turns()
        assert app.handled == ["/plain"]
        assert bodies(transport.text) == ["A", "plain", "now"]
        assert not transport.paused

    asyncio.run(scenario())


def test_a_closing_answer_drops_the_ones_after_it() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/first", "/api/last", "/api/after"))
        await turns()
        app.futures["after"].set_result("AFTER")
        app.futures["last"].set_result("LAST")
        app.futures["first"].set_result("FIRST")
        await turns()
        assert bodies(transport.text) == ["FIRST", "LAST"]
        assert "Connection: close" in transport.text.split("HTTP/1.1 ")[2]
        assert transport.closed

    asyncio.run(scenario())


def test_a_failing_handler_answers_500_in_its_place(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/a", "/api/boom"))
        app.futures["a"].set_result("A")
        await turns()
        answers = transport.text.split("HTTP/1.1 ")[1:]
        assert answers[0].startswith("200") and answers[1].startswith("500")
        assert transport.closed  # a fault of ours: the connection is not trusted further

    asyncio.run(scenario())
    assert [r.message for r in caplog.records].count("request handler failed") == 1


def test_reading_pauses_at_the_limit_and_resumes_as_answers_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_PIPELINED", 2)

    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/a", "/api/b", "/api/c"))
        await turns()
        assert app.started == ["a", "b"] and transport.paused
        app.futures["a"].set_result("A")
        await turns()
        assert app.started == ["a", "b", "c"]
        app.futures["b"].set_result("B")
        app.futures["c"].set_result("C")
        await turns()
        assert bodies(transport.text) == ["A", "B", "C"] and not transport.paused

    asyncio.run(scenario())


def test_a_lost_connection_ignores_late_answers() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/a", "/api/b"))
        await turns()
        conn.connection_lost(None)
        app.futures["a"].set_result("A")
        app.futures["b"].set_result("B")
        await turns()
        assert transport.written == []

    asyncio.run(scenario())


def test_malformed_input_after_pipelined_requests_is_answered_after_them() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        conn.data_received(requests("/api/a") + b"NOT HTTP AT ALL\r\n\r\n")
        await turns()
        assert transport.written == [] and not transport.closed
        conn.data_received(requests("/api/b"))  # after the garbage: not parsed
        app.futures["a"].set_result("A")
        await turns()
        answers = transport.text.split("HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == ["200", "400"]
        assert app.started == ["a"] and transport.closed

    asyncio.run(scenario())


def test_an_oversized_body_after_pipelined_requests_is_refused_after_them() -> None:
    async def scenario() -> None:
        app = App()
        conn, transport = connection(app)
        huge = b"POST /api/big HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n"
        conn.data_received(requests("/api/a") + huge)
        await turns()
        assert transport.written == []
        app.futures["a"].set_result("A")
        await turns()
        answers = transport.text.split("HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == ["200", "413"]
        assert app.started == ["a"] and transport.closed

    asyncio.run(scenario())
