"""The shard process: adopts client sockets from the router and owns them until they end.

Theory of operation
-------------------
Boot: listen for handed-off sockets on ``<runtime_dir>/shard-K.handoff``, connect the control DEALER
to the router, start the one-second ticker, then report ready. From then on three things drive the shard:

* a handoff (descriptor + connect request) → the socket is adopted with ``connect_accepted_socket``;
  the transport adapter verifies the token and, on success, the connection enters the hub;
* a control request from the router (connections, disconnect, info) → :mod:`shards.api`;
* the ticker → heartbeat to the supervisor, pings for the connections whose ping second it is (pings are
  spread over ``ping_interval`` buckets so that they never all fire at once), and expiry.

SIGTERM: stop taking handoffs, send every client disconnect 3001 "shutdown", wait for the streams to
close until ``shutdown_timeout``, abort the rest, exit. A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import os
import signal
import socket
import time
import uuid
from typing import Any

import uvloop
import zmq

from broker import errors
from broker.auth import TokenVerifier
from broker.config import Config
from broker.errors import Disconnect
from broker.ipc import paths
from broker.ipc.control import ControlClient
from broker.ipc.handoff import HandoffReceiver
from broker.lifecycle import ChildContext, standalone_context
from broker.protocol.state import ConnectionState
from broker.protocol.uni import HTTP_STREAM, SSE
from shards import api
from shards.hub import Hub
from shards.uni import UniConnection

log = logging.getLogger("switchboard.shard")

FRAMINGS = {"uni_http_stream": HTTP_STREAM, "uni_sse": SSE}


class Shard:
    def __init__(self, cfg: Config, index: int, ctx: ChildContext, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.index = index
        self.ctx = ctx
        self.loop = loop
        self.pid = os.getpid()
        self.hub = Hub()
        self.verifier = TokenVerifier.for_connections(cfg)
        self.started_at = time.monotonic()
        self._buckets: list[set[UniConnection]] = [set() for _ in range(max(1, math.ceil(cfg.ping_interval)))]
        self._expiry: list[tuple[float, str]] = []
        self._stopping = asyncio.Event()
        self._zmq = zmq.Context()
        self._receiver = HandoffReceiver(loop, paths.handoff_path(cfg.runtime_path, index), self.adopt)
        self._control: ControlClient | None = None
        self._adoptions: set[asyncio.Task[Any]] = set()
        # Every adopted connection whose socket is still open, registered in the hub or not.
        self._live: set[UniConnection] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.cfg.runtime_path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._receiver.start()
        self._control = ControlClient(
            self.loop,
            self._zmq,
            paths.control_endpoint(self.cfg.runtime_path),
            paths.shard_identity(self.index),
            self.handle_control,
        )
        log.info(
            "shard %d ready: handoff socket %s",
            self.index,
            paths.handoff_path(self.cfg.runtime_path, self.index),
        )

    async def serve(self) -> None:
        ticker = self.loop.create_task(self._tick_loop())
        await self._stopping.wait()
        ticker.cancel()
        await self._drain()

    def request_stop(self) -> None:
        if self._stopping.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        log.info("shutting down: disconnecting %d clients", len(self.hub))
        self._stopping.set()

    async def _drain(self) -> None:
        self._receiver.stop()
        for conn in list(self.hub.by_client.values()):
            assert isinstance(conn, UniConnection)
            self.disconnect(conn, errors.SHUTDOWN)
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        while self._open_transports() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in self._open_transports():
            conn.abort()
        if self._control is not None:
            self._control.close()
        self._zmq.term()

    def _open_transports(self) -> list[UniConnection]:
        return [conn for conn in self._live if conn.transport is not None]

    # -- connections -----------------------------------------------------------------------------

    def adopt(self, header: dict[str, Any], data: bytes, fd: int) -> None:
        transport_name = header.get("t", "")
        framing = FRAMINGS.get(transport_name)
        if framing is None or self._stopping.is_set():
            os.close(fd)
            log.warning("refusing a handed-off connection (transport %r)", transport_name)
            return
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        sock.setblocking(False)
        state = ConnectionState(str(header["c"]), uuid.uuid4().hex, transport_name, "json", time.time())
        conn = UniConnection(self, state, framing, data)
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: conn, sock))
        self._adoptions.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[Any]) -> None:
        self._adoptions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("adopting a socket failed: %s", task.exception())

    def attach(self, conn: UniConnection) -> None:
        self._live.add(conn)

    def detach(self, conn: UniConnection) -> None:
        self._live.discard(conn)
        self.unregister(conn)

    def _bucket(self, conn: UniConnection) -> set[UniConnection]:
        return self._buckets[int(conn.state.connected_at) % len(self._buckets)]

    def register(self, conn: UniConnection) -> bool:
        try:
            self.hub.add(conn)
        except ValueError:
            log.error("duplicate client id %s; closing the new connection", conn.state.client)
            conn.close_with(errors.DISCONNECT_INTERNAL)
            return False
        self._bucket(conn).add(conn)
        if conn.state.expire_at:
            heapq.heappush(self._expiry, (conn.state.expire_at, conn.state.client))
        log.debug(
            "client %s connected: user=%r transport=%s",
            conn.state.client,
            conn.state.user,
            conn.state.transport,
        )
        return True

    def unregister(self, conn: UniConnection) -> None:
        if self.hub.remove(conn):
            self._bucket(conn).discard(conn)
            log.debug("client %s gone", conn.state.client)

    def disconnect(self, conn: UniConnection, reason: Disconnect) -> None:
        conn.close_with(reason)

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def rss_bytes(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    # -- control plane ---------------------------------------------------------------------------

    async def handle_control(self, method: str, params: Any) -> Any:
        handler = api.HANDLERS.get(method)
        if handler is None:
            raise errors.METHOD_NOT_FOUND
        return handler(self, params if isinstance(params, dict) else {})

    # -- timers ----------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        second = int(time.time())
        while True:
            second += 1
            await asyncio.sleep(max(0.0, second - time.time()))
            try:
                self._tick(time.time())
            except Exception:
                log.exception("shard tick failed")

    def _tick(self, now: float) -> None:
        self.ctx.beat()
        if not self.ctx.parent_alive():
            log.error("supervisor is gone; shutting down")
            self.request_stop()
            return
        bucket = self._buckets[int(now) % len(self._buckets)]
        for conn in list(bucket):
            conn.ping()
        delay = self.cfg.client_expired_close_delay
        while self._expiry and self._expiry[0][0] + delay <= now:
            expire_at, client = heapq.heappop(self._expiry)
            found = self.hub.by_client.get(client)
            if isinstance(found, UniConnection) and found.state.expire_at == expire_at:
                self.disconnect(found, errors.CONNECTION_EXPIRED)


def run(cfg: Config, index: int, ctx: ChildContext) -> None:
    """Run shard ``index`` until it is told to stop; raises if it cannot boot."""
    uvloop.install()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        shard = Shard(cfg, index, ctx, loop)
        shard.start()
        loop.add_signal_handler(signal.SIGTERM, shard.request_stop)
        if not ctx.supervised:
            loop.add_signal_handler(signal.SIGINT, shard.request_stop)
        ctx.ready()
        loop.run_until_complete(shard.serve())
    finally:
        loop.close()


def run_standalone(cfg: Config, index: int) -> int:
    from broker.logs import setup_logging

    role = f"shard-{index}"
    setup_logging(cfg.log_level, role)
    if not 0 <= index < cfg.num_shards:
        log.error("shard index %d is outside 0..%d (shards=%d)", index, cfg.num_shards - 1, cfg.num_shards)
        return 1
    run(cfg, index, standalone_context(role))
    return 0
