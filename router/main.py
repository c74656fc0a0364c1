"""The router process: accepts every client socket and serves the HTTP API.

Theory of operation
-------------------
The router listens on ``address:port`` once every shard answers its control socket (or after
``SHARDS_BOOT_WAIT``, logged), so that ``/health`` answering means a client is served. Each accepted
socket speaks HTTP/1.1 (:mod:`router.http`) and its requests are routed by path:

* ``/connection/<transport>`` → :mod:`router.connect`: the socket is handed to the shard that owns the
  user, with the connect request, and the router forgets it;
* ``/api`` and ``/api/<method>`` → :mod:`router.api`: answered here, asking one shard (by user) or every
  shard (scatter-gather with a deadline) over ZeroMQ;
* ``/health`` → ``200 {}``.

Sockets that are not handed to a shard yet are bounded in number (``http_max_pending_connections``; a
socket beyond it gets 503 and is closed) and in time (:class:`router.http.Timeouts`, swept here), so that
sockets that send slowly or nothing cannot pile up.

SIGTERM: stop accepting, let requests in flight finish (bounded by ``shutdown_timeout``), exit. The
shards, not the router, tell clients about the shutdown: the router holds no client streams.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, cast

import uvloop

from broker.config import Config
from broker.lifecycle import ChildContext, standalone_context
from broker.metrics.exposition import CONTENT_TYPE
from broker.proxy.connect_call import ConnectProxy
from broker.runtime_dir import lock_role
from router.admin import AdminEndpoints
from router.api import Api
from router.cluster import Cluster
from router.connect import ConnectHandler
from router.emulation import EmulationHandler
from router.http import Eager, HttpConnection, Request, Responder, Starter, Timeouts
from router.metrics import MetricsEndpoint
from router.websocket import WebSocketEndpoints

log = logging.getLogger("switchboard.router")

API_BODY_LIMIT = 16 * 1024 * 1024
DEFAULT_BODY_LIMIT = 64 * 1024
_OVERLOADED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# A refusal is logged at most this often, with the count since the last line (no flood under attack).
_REFUSAL_LOG_INTERVAL = 5.0
# How long the router waits for every shard to answer before it listens anyway (logged).
SHARDS_BOOT_WAIT = 10.0


class _Refused(asyncio.Protocol):
    """A socket over ``http_max_pending_connections``: answered 503 and closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(_OVERLOADED)
        transport.close()


class RouterApp:
    def __init__(self, cfg: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.cluster = Cluster(cfg, loop)
        self.api = Api(cfg, self.cluster)
        self.proxy = ConnectProxy(cfg)
        self.connect = ConnectHandler(cfg, self.cluster, self.proxy)
        self.websocket = WebSocketEndpoints(cfg, self.cluster, self.proxy)
        self.emulation = EmulationHandler(cfg, self.cluster)
        self.api_prefix = cfg.api_handler_prefix.rstrip("/") or "/api"
        self.admin = AdminEndpoints(cfg, self.api.call) if cfg.admin else None
        self.metrics = (
            MetricsEndpoint(self.cluster, float(cfg.api_shard_timeout), self.api.timings, self.api.num_nodes)
            if cfg.prometheus
            else None
        )
        self.connections: set[HttpConnection] = set()
        self.timeouts = Timeouts(
            head=cfg.http_request_head_timeout, read=cfg.http_request_read_timeout, idle=cfg.http_idle_timeout
        )
        self._refused = 0
        self._refusal_logged = 0.0
        # API requests start at once, in the step that parsed them (see router.http.Eager): alone, no
        # API method needs a current task; with the Redis engine, asking other nodes does.
        self.eager_api = cfg.engine != "redis"

    def body_limit(self, path: str) -> int:
        endpoint = self.connect.endpoints.get(path)
        if endpoint is not None:
            return endpoint.body_limit
        if path == self.api_prefix or path.startswith(self.api_prefix + "/"):
            return API_BODY_LIMIT
        if self.emulation.enabled and path == self.emulation.path:
            return self.cfg.emulation_max_request_body_size
        return DEFAULT_BODY_LIMIT

    def pipelined(self, request: Request) -> Starter | None:
        """API requests run beside the others pipelined on their connection (answered in order)."""
        path = request.path
        if path != self.api_prefix and not path.startswith(self.api_prefix + "/"):
            return None
        if self.eager_api:
            return lambda responder: Eager(self._serve_api(request, responder))
        return lambda responder: self._serve_api(request, responder)

    def handle(self, request: Request, conn: HttpConnection) -> Coroutine[Any, Any, None] | Eager | None:
        path = request.path
        endpoint = self.connect.endpoints.get(path)
        if endpoint is not None:
            return self.connect.handle(endpoint, request, conn)
        if self.emulation.enabled and path == self.emulation.path:
            return self.emulation.handle(request, conn)
        if path in self.websocket.paths:
            # A plain request to a WebSocket endpoint (no Upgrade header).
            conn.respond(HTTPStatus.BAD_REQUEST, b"Bad Request", "text/plain")
            return None
        if self.admin is not None and path in self.admin.paths:
            return self.admin.handle(request, conn)
        if self.metrics is not None and path == self.cfg.prometheus_handler_prefix:
            return self._serve_metrics(request, conn)
        if path == "/health" and self.cfg.health:
            if request.method in ("GET", "HEAD"):
                conn.respond(HTTPStatus.OK, b"{}")
            else:
                conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return None
        conn.respond(HTTPStatus.NOT_FOUND, b"404 page not found", "text/plain")
        return None

    def upgrade(self, request: Request, conn: HttpConnection, rest: bytes) -> None:
        self.websocket.upgrade(request, conn, rest)

    async def _serve_api(self, request: Request, conn: Responder) -> None:
        if request.method != "POST":
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return
        if not self.api.authorized(request):
            log.info("API request without a valid key")
            conn.respond(HTTPStatus.UNAUTHORIZED)
            return
        if request.path == self.api_prefix:
            status, body = await self.api.serve_legacy(request)
        else:
            status, body = await self.api.serve_method(request.path[len(self.api_prefix) + 1 :], request)
        if status != HTTPStatus.OK:
            log.info("API %s answered %d", request.path, status)
        content_type = "application/json" if body[:1] in (b"{", b"[") else "text/plain"
        conn.respond(status, body, content_type)

    async def _serve_metrics(self, request: Request, conn: HttpConnection) -> None:
        if request.method not in ("GET", "HEAD"):
            conn.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"Method Not Allowed", "text/plain")
            return
        assert self.metrics is not None
        conn.respond(HTTPStatus.OK, await self.metrics.scrape(), CONTENT_TYPE)

    def new_connection(self) -> asyncio.Protocol:
        if len(self.connections) >= self.cfg.http_max_pending_connections:
            self._refused += 1
            now = time.monotonic()
            if now - self._refusal_logged >= _REFUSAL_LOG_INTERVAL:
                log.warning(
                    "%d connections refused (503): %d sockets still pending, http_max_pending_connections",
                    self._refused,
                    len(self.connections),
                )
                self._refused = 0
                self._refusal_logged = now
            return _Refused()
        conn = HttpConnection(self, on_close=self.connections.discard, timeouts=self.timeouts)
        self.connections.add(conn)
        return conn

    async def expire_connections(self) -> None:
        """Close the sockets whose deadline passed, a few times per shortest timeout."""
        timeouts = self.timeouts
        period = min(1.0, timeouts.head / 4, timeouts.read / 4, timeouts.idle / 4)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.expire(now)


async def _serve(cfg: Config, ctx: ChildContext) -> None:
    loop = asyncio.get_running_loop()
    cfg.runtime_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    app = RouterApp(cfg, loop)
    await app.api.join_nodes()
    app.emulation.nodes = app.api.nodes
    # Listen once the shards answer: a client accepted now is handed to a shard that takes it, and
    # /health answering means the node serves (the supervisor starts every process at once).
    silent = await app.cluster.until_every_shard_answers(SHARDS_BOOT_WAIT)
    if silent:
        log.warning("listening although shards %s do not answer yet", silent)
    server = await loop.create_server(
        app.new_connection, host=cfg.address or None, port=cfg.port, reuse_address=True, backlog=4096
    )
    stopping = asyncio.Event()
    sweeper = loop.create_task(app.expire_connections())

    def request_stop() -> None:
        if stopping.is_set():
            if ctx.supervised:
                return  # the same stop reaching the whole process group; the supervisor escalates
            log.warning("second stop signal: exiting now")
            raise SystemExit(1)
        stopping.set()

    loop.add_signal_handler(signal.SIGTERM, request_stop)
    if not ctx.supervised:
        loop.add_signal_handler(signal.SIGINT, request_stop)
    log.info("router listening on %s:%d with %d shards", cfg.address or "*", cfg.port, cfg.num_shards)
    ctx.ready()
    while not stopping.is_set():
        ctx.beat()
        if not ctx.parent_alive():
            log.error("supervisor is gone; shutting down")
            break
        try:
            await asyncio.wait_for(stopping.wait(), 1.0)
        except TimeoutError:
            pass
    log.info("router stopping: no new connections")
    server.close()
    sweeper.cancel()
    deadline = time.monotonic() + cfg.shutdown_timeout
    while any(conn.busy for conn in app.connections) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(app.connections):
        if conn.transport is not None:
            conn.transport.close()
    await app.api.close()
    await app.proxy.close()
    app.cluster.close()


def run(cfg: Config, ctx: ChildContext) -> None:
    """Run the router until it is told to stop; raises if it cannot boot (e.g. the port is taken)."""
    uvloop.install()
    asyncio.run(_serve(cfg, ctx))


def run_standalone(cfg: Config) -> int:
    from broker.logs import setup_logging

    setup_logging(cfg.log_level, "router")
    # Held until exit: a second router on this directory, or a whole server, is refused.
    lock = lock_role(cfg.runtime_path, "router")
    try:
        run(cfg, standalone_context("router"))
    finally:
        lock.release()
    return 0
