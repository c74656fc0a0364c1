"""HTTP/1.1 on the router's accepted sockets, parsed with httptools.

One ``HttpConnection`` per accepted socket. It collects a request (method, path, query, headers, body
within the route's size limit) and passes it to the application, which either answers it (keep-alive
continues with the next request) or takes the socket over (``detach``) to hand it to a shard.

Pipelined requests are answered in order. Those the application marks as pipelined (``pipelined``: the
server API) run side by side, at most ``MAX_PIPELINED`` at once: each answers through a ``Slot`` of its
own, and slots are written out from the oldest as they fill, so ten publishes sent in one write reach the
shards together instead of one round trip after another. Any other request waits until every slot before
it is written, and reading is paused while it is served.

Every socket has at most one deadline (``Timeouts``), checked by the owner's sweep (``expire``): a complete
head within ``head`` of accept or of a request's first byte, a complete body within ``read`` of that first
byte, the next request within ``idle`` of the last response. None while a request is served (the handler
bounds its own wait) or after an upgrade (the WebSocket layer has its own). A declared body over the
route's limit is answered 413 before any of it is read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import httptools

from broker.eager import start_eagerly

log = logging.getLogger("switchboard.router")

MAX_HEADERS = 100
MAX_HEADER_BYTES = 64 * 1024
# After an early answer (413, 408) input is read and dropped this long before closing, so that the kernel
# does not reset the connection while the client still sends, which could destroy the answer unread.
LINGER = 1.0
# Pipelined API requests in flight on one connection; past it, reading pauses until the oldest answers.
MAX_PIPELINED = 64


@dataclass(frozen=True, slots=True)
class Timeouts:
    head: float = 10.0
    read: float = 60.0
    idle: float = 60.0


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    _query_args: dict[str, list[str]] | None = field(default=None, repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def query_arg(self, name: str) -> str | None:
        if self._query_args is None:
            self._query_args = parse_qs(self.query, keep_blank_values=True)
        values = self._query_args.get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Eager:
    """A handler's coroutine to start at once, within the step that parsed its request: one that does
    not suspend (a by-user ``connections`` read from shared memory) is answered without a task or a
    loop iteration. Only for handlers that need no current task (no ``asyncio.timeout``)."""

    coroutine: Coroutine[Any, Any, None]


class Responder(Protocol):
    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
    ) -> None: ...


Started = Coroutine[Any, Any, None] | Eager
# Starts a pipelined request's handler with the slot it answers through.
Starter = Callable[[Responder], Started]


class Application(Protocol):
    def body_limit(self, path: str) -> int: ...

    def pipelined(self, request: Request) -> Starter | None:
        """A starter for a request that may run beside the connection's other ones; None otherwise."""
        ...

    def handle(self, request: Request, conn: HttpConnection) -> Coroutine[Any, Any, None] | Eager | None: ...

    def upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None: ...


class StreamReader(Protocol):
    """Takes over an upgraded socket's input (see ``HttpConnection.hand_to``)."""

    def feed(self, data: bytes) -> None: ...

    def connection_lost(self) -> None: ...


def render_response(
    status: int,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    keep_alive: bool = True,
) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    if body or status not in (204, 304):
        lines.append(f"Content-Length: {len(body)}")
        if body:
            lines.append(f"Content-Type: {content_type}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Slot:
    """One pipelined request's answer, written once every answer before it is."""

    __slots__ = ("close", "conn", "data", "keep_alive")

    def __init__(self, conn: HttpConnection, keep_alive: bool) -> None:
        self.conn = conn
        self.keep_alive = keep_alive
        self.data: bytes | None = None
        self.close = False

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
    ) -> None:
        if self.data is not None:
            return
        self.close = not (keep_alive and self.keep_alive)
        self.data = render_response(status, body, content_type, headers, not self.close)
        if not self.conn._dispatching:  # else written with the others filled in the same step
            self.conn._write_slots()

    def settled(self, result: Any, error: BaseException | None) -> None:
        if error is not None:
            log.error("request handler failed", exc_info=error)
            self.respond(
                HTTPStatus.INTERNAL_SERVER_ERROR, b"Internal Server Error", "text/plain", keep_alive=False
            )
        elif self.data is None:
            log.error("a pipelined request's handler ended without an answer")
            self.respond(HTTPStatus.INTERNAL_SERVER_ERROR, b"Internal Server Error", "text/plain")


class HttpConnection(asyncio.Protocol):
    def __init__(
        self,
        app: Application,
        on_close: Callable[[HttpConnection], None] | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.app = app
        self.timeouts = timeouts
        self.deadline = 0.0  # time.monotonic() by which the socket must make progress; 0 = none
        self._began = 0.0  # when the request being read started; 0 = between requests
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._on_close = on_close
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._limit = 0
        self._queue: list[Request] = []
        self._slots: collections.deque[Slot] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()  # pipelined handlers still running
        self._busy = False
        self._dispatching = False
        self._failed = False
        self._detached = False
        self._closing = False
        self._upgrade: Request | None = None
        self._reader: StreamReader | None = None

    @property
    def busy(self) -> bool:
        """A request is being served (an API call waiting for shards)."""
        return self._busy or bool(self._slots)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.deadline = time.monotonic() + self.timeouts.head

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as exc:  # a bug on some input must cost this socket only, without a traceback
            log.error("closing %s after an error on its input: %r", self._peer(), exc)
            self._closing = True
            if self.transport is not None:
                self.transport.abort()

    def _receive(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.feed(data)
            return
        if self._detached or self._closing or self._failed:
            return
        try:
            # Answers to the pipelined requests of this read are written together, after it.
            self._dispatching = True
            try:
                self._parser.feed_data(data)
            finally:
                self._dispatching = False
            if self._slots and self._slots[0].data is not None:
                self._write_slots()
        except httptools.HttpParserUpgrade as exc:
            request, self._upgrade = self._upgrade, None
            if request is None or self._busy or self._queue or self._slots:
                self._fail(HTTPStatus.BAD_REQUEST, b"Bad Request")
                return
            offset = int(exc.args[0]) if exc.args else len(data)
            self.app.upgrade(request, self, data[offset:])
        except httptools.HttpParserError as exc:
            log.info("malformed HTTP request from %s: %s", self._peer(), exc)
            self._fail(HTTPStatus.BAD_REQUEST, b"Bad Request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._reader is not None:
            self._reader.connection_lost()
        if self._on_close is not None:
            self._on_close(self)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._began = time.monotonic()
        self.deadline = self._began + self.timeouts.head
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if len(self._headers) >= MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("too many header bytes")
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        self._limit = self.app.body_limit(parsed.path.decode("latin-1"))
        self.deadline = self._began + self.timeouts.read
        declared = self._headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            log.info("request from %s declares a %s-byte body: 413", self._peer(), declared)
            self._answer_early(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"Request Entity Too Large")

    def on_body(self, body: bytes) -> None:
        if self._closing or self._failed:
            return
        self._body_size += len(body)
        if self._body_size > self._limit:
            # A chunked body has no declared length: answered as soon as it passes the limit.
            self._body = []
            log.info("request body from %s passed %d bytes: 413", self._peer(), self._limit)
            self._answer_early(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"Request Entity Too Large")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._began = 0.0
        self.deadline = 0.0
        if self._closing or self._failed:
            return
        parsed = httptools.parse_url(self._url)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=parsed.path.decode("latin-1"),
            query=(parsed.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
            keep_alive=self._parser.should_keep_alive(),
        )
        if self._parser.should_upgrade():
            self._upgrade = request  # answered by the HttpParserUpgrade handler in data_received
            return
        self._queue.append(request)
        if not self._busy:
            self._next()

    # -- serving ---------------------------------------------------------------------------------

    def _next(self) -> None:
        outer, self._dispatching = self._dispatching, True
        try:
            self._dispatch()
        finally:
            self._dispatching = outer
        if not outer and self._slots and self._slots[0].data is not None:
            self._write_slots()  # answered while dispatching: together, in one write

    def _dispatch(self) -> None:
        while self._queue and not self._detached and not self._closing and self.transport is not None:
            request = self._queue[0]
            starter = self.app.pipelined(request)
            if starter is not None:
                if len(self._slots) >= MAX_PIPELINED:
                    self.transport.pause_reading()  # resumed as the oldest slot is written
                    return
                self._queue.pop(0)
                self._start_pipelined(starter, request)
                continue
            if self._slots:
                self.transport.pause_reading()  # resumed once every slot before it is written
                return
            self._queue.pop(0)
            outcome = self.app.handle(request, self)
            if outcome is None:
                continue
            loop = asyncio.get_running_loop()
            if isinstance(outcome, Eager):
                carried = start_eagerly(outcome.coroutine, self._settled, loop)
                if carried is None:
                    continue  # answered already
                self._busy = True
                self.transport.pause_reading()
                return
            self._busy = True
            self.transport.pause_reading()
            task = loop.create_task(outcome)
            task.add_done_callback(self._served)
            return
        self._busy = False
        if self._slots:
            self.deadline = 0.0  # the handlers bound their own waits
        elif not self._began and not self._detached and self._reader is None:
            self.deadline = time.monotonic() + self.timeouts.idle

    def _start_pipelined(self, starter: Starter, request: Request) -> None:
        slot = Slot(self, request.keep_alive)
        self._slots.append(slot)
        outcome = starter(slot)
        if isinstance(outcome, Eager):
            carried = start_eagerly(outcome.coroutine, slot.settled, asyncio.get_running_loop())
            if carried is not None:
                self._tasks.add(carried)
                carried.add_done_callback(self._tasks.discard)
            return
        task = asyncio.get_running_loop().create_task(outcome)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: slot.settled(None, None if t.cancelled() else t.exception()))

    def _write_slots(self) -> None:
        """Write the filled slots from the oldest; go on with requests that waited for them."""
        slots = self._slots
        transport = self.transport
        written: list[bytes] = []
        while slots and slots[0].data is not None:
            slot = slots.popleft()
            if transport is None or self._closing or self._detached or transport.is_closing():
                continue
            written.append(cast(bytes, slot.data))
            if slot.close:
                self._closing = True
                slots.clear()
        if not written or transport is None:
            return
        transport.write(written[0] if len(written) == 1 else b"".join(written))
        if self._closing:
            transport.close()
            return
        if self._busy or self._closing or self._detached or transport is None:
            return  # the handler being served carries on when it ends
        transport.resume_reading()
        self._next()

    def _served(self, task: asyncio.Task[None]) -> None:
        self._settled(None, None if task.cancelled() else task.exception())

    def _settled(self, result: Any, error: BaseException | None) -> None:
        """A handler ended (``error``: it raised). Carries on with the requests queued meanwhile."""
        was_busy, self._busy = self._busy, False
        if error is not None:
            log.error("request handler failed", exc_info=error)
            self.respond(
                HTTPStatus.INTERNAL_SERVER_ERROR, b"Internal Server Error", "text/plain", keep_alive=False
            )
        if not was_busy:
            return  # ended within _next's own step: _next goes on by itself
        if self.transport is not None and not self._detached and not self._closing:
            self.transport.resume_reading()
            self._next()

    def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        keep_alive: bool = True,
    ) -> None:
        transport = self.transport
        if transport is None or self._detached or self._closing or transport.is_closing():
            return
        if self._slots:  # after the answers still being worked on
            slot = Slot(self, self._parser.should_keep_alive())
            self._slots.append(slot)
            slot.respond(status, body, content_type, headers, keep_alive)
            return
        keep_alive = keep_alive and self._parser.should_keep_alive()
        transport.write(render_response(status, body, content_type, headers, keep_alive))
        if not keep_alive:
            self._closing = True
            transport.close()

    def detach(self) -> asyncio.Transport:
        """Stop serving HTTP on this socket; the caller now owns the transport (paused)."""
        assert self.transport is not None
        self._detached = True
        self.transport.pause_reading()
        return self.transport

    def hand_to(self, reader: StreamReader) -> None:
        """Route this socket's further input to ``reader`` (after a protocol upgrade)."""
        self._reader = reader
        if self.transport is not None:
            self.transport.resume_reading()

    def write_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()
        self._closing = True

    def expire(self, now: float) -> None:
        """Close the socket if its deadline passed (called periodically by the owner)."""
        if not self.deadline or now < self.deadline:
            return
        self.deadline = 0.0
        if self._detached or self._closing or self.transport is None:
            return
        if self._began:
            log.info("request from %s not complete in time: 408", self._peer())
            self._answer_early(HTTPStatus.REQUEST_TIMEOUT, b"Request Timeout")
        else:
            self._closing = True
            self.transport.close()

    def _answer_early(self, status: int, body: bytes) -> None:
        """Answer before the request is complete and stop serving; drop input for a while, then close."""
        transport = self.transport
        self._queue.clear()
        if self._slots:  # after the answers still being worked on, then closed
            self._failed = True
            self.respond(status, body, "text/plain", keep_alive=False)
            return
        self._closing = True
        if transport is None or transport.is_closing():
            return
        transport.write(render_response(status, body, "text/plain", keep_alive=False))
        asyncio.get_running_loop().call_later(LINGER, transport.close)

    def _fail(self, status: int, body: bytes) -> None:
        self._failed = True  # no more input is parsed
        if self._slots:
            self.respond(status, body, "text/plain", keep_alive=False)  # closes after the earlier answers
            return
        self.respond(status, body, "text/plain", keep_alive=False)
        if self.transport is not None:
            self.transport.close()
        self._closing = True

    def _peer(self) -> str:
        if self.transport is None:
            return "?"
        peer = self.transport.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
