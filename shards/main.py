"""The shard process: adopts client sockets from the router and owns them until they end.

A shard is composed of parts, each in its own module and each depending on a small ``Protocol`` of what
it needs rather than on :class:`Shard`:

* :mod:`shards.membership` — the hub (who is connected, subscribed to what) and the connections' timers
  (:mod:`shards.timers`: pings, pong checks, expiry);
* :mod:`shards.writer` — the channels this shard writes: offsets and history, join/leave members;
* :mod:`shards.fanout` — publications from the SUB socket to local subscribers, encoded once per kind,
  written once per connection per loop iteration;
* :mod:`shards.peer_mesh` — questions to the other shards (a channel's writer, everyone's presence);
  :mod:`shards.peer_requests` / :mod:`shards.router_requests` — what peers and the router may ask;
* :mod:`shards.restarts` — a restarted writer's announcement, and the others making room for it.

Boot: listen for handed-off sockets, connect to the router's control socket, bind this shard's PUB and
connect its SUB to every shard's PUB, join the peer mesh, start the one-second ticker, report ready, then
announce the start. SIGTERM: stop taking handoffs, disconnect every client with 3001 "shutdown", wait
until ``shutdown_timeout``, abort the rest, exit; a second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import uvloop
import zmq

from broker import errors
from broker.access.status import MemoryUserStatus, RedisUserStatus, UserStatusStore
from broker.auth import TokenVerifier
from broker.channels import ChannelRules
from broker.config import Config
from broker.eager import client_outcome, start_eagerly
from broker.engine import engines_for
from broker.engine.redis_keys import RedisKeys
from broker.errors import Disconnect
from broker.hashing import writer_for
from broker.ids import new_id
from broker.ipc import paths
from broker.ipc.channel_counts import open_counts
from broker.ipc.control import Responder
from broker.ipc.handoff import HandoffReceiver, Header
from broker.ipc.pubsub import Publisher, Subscriber
from broker.lifecycle import ChildContext, standalone_context
from broker.proxy.connect_call import ConnectProxy
from broker.proxy.table import ProxySpec, proxy_table
from broker.publication import Publication
from broker.runtime_dir import lock_role
from broker.websocket import frames
from shards.adoption import connection_for
from shards.connection import ClientConnection
from shards.fanout import FanOut, WriteCoalescer
from shards.membership import Membership
from shards.peer_mesh import PeerMesh
from shards.peer_requests import PEER_HANDLERS
from shards.proxies import ProxyCalls
from shards.proxy_refresh import ProxyRefresher
from shards.rehome import Rehoming
from shards.restarts import PeerRestarts, announce_start, load_access_rules
from shards.router_requests import ROUTER_HANDLERS, warm_up
from shards.timers import every_second
from shards.user_index import UserIndexPublisher
from shards.writer import ChannelWriter

if TYPE_CHECKING:
    from shards.redis_node import RedisNode

log = logging.getLogger("switchboard.shard")


class Shard:
    """One shard process: composes its parts and owns the lifecycle and the hub's bookkeeping."""

    def __init__(self, cfg: Config, index: int, ctx: ChildContext, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.index = index
        self.size = cfg.num_shards
        self.ctx = ctx
        self.loop = loop
        self.pid = os.getpid()
        # Who is here: the hub, the connections' timers, the data plane's interest in channels.
        self.membership = Membership(cfg, index, open_counts(cfg), time.time())
        self.hub = self.membership.hub
        self.timers = self.membership.timers
        self.admit = self.membership.admit
        self.unregister = self.membership.unregister
        self.subscribe = self.membership.subscribe
        self.unsubscribe = self.membership.unsubscribe
        self.server_unsubscribe = self.membership.server_unsubscribe
        self.expiry_changed = self.membership.expiry_changed
        self.info_changed = self.membership.info_changed
        self.sub_expiry_changed = self.membership.sub_expiry_changed
        self.access = self.membership.access
        self.verifier = TokenVerifier.for_connections(cfg)
        self.rules = ChannelRules.from_config(cfg)
        # The channels this shard writes (see broker.hashing.writer_for), their streams and members.
        self.engines = engines_for(cfg, label=f"shard {index}")
        self.boot_id = new_id()
        self.writer = ChannelWriter(
            self.rules, index, self.size, cfg.global_history_meta_ttl, self.engines.history
        )
        self.writer.boot = self.boot_id
        # With the Redis engine: this shard's part in the node (see shards.redis_node).
        self.redis: RedisNode | None = None
        if self.engines.redis is not None:
            # Imported only with the Redis engine: a shard on the memory engine never loads the Redis
            # client (~10 MiB of its fixed memory).
            from shards.redis_node import RedisNode

            self.redis = RedisNode(
                cfg,
                self.engines,
                self.rules,
                self.hub,
                index=index,
                boot=self.boot_id,
                loop=loop,
                spawn=self.spawn,
            )
            self.writer.relay = self.engines.broker
            self.membership.roster = self.redis.roster
        self.statuses: UserStatusStore = (
            RedisUserStatus(self.engines.redis, RedisKeys(cfg.redis_prefix))
            if self.engines.redis is not None
            else MemoryUserStatus()
        )
        self.membership.on_user_gone = self._user_gone
        # Connections by user in shared memory, for the router's by-user answers (None: it asks here).
        self.user_index = UserIndexPublisher.open(cfg, index, self.hub, loop)
        self.membership.user_index = self.user_index
        self.mesh = PeerMesh(index, self.size, self.handle_peer_request, self.spawn)
        self.writer_query = self.mesh.writer_query
        self.counters = self.membership.counters
        self.writer.counters = self.counters
        self.fanout = FanOut(self.hub, self.rules, self, self.counters)
        self.membership.fanout = self.fanout
        if self.redis is not None:
            self.redis.checking = self.fanout
        self.restarts = PeerRestarts(self.writer, self.fanout, self.size, loop)
        self.peer_restarted = self.restarts.restarted
        self.coalescer = WriteCoalescer(loop)
        self.mark_dirty = self.coalescer.mark_dirty
        self.started_at = time.monotonic()
        self._stopping = asyncio.Event()
        self._zmq: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._receiver = HandoffReceiver(loop, paths.handoff_path(cfg.runtime_path, index), self.adopt)
        self._closables: list[Any] = []
        self._subscriber: Subscriber | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Every adopted connection whose socket is still open, registered in the hub or not.
        self._live: set[ClientConnection] = set()
        # Connections whose socket did not take everything written (see queued_bytes), and how late the
        # last one-second tick woke (the event loop's lag): both reported to /metrics.
        self._backlog: set[ClientConnection] = set()
        self.loop_lag = 0.0
        # Calls to the application backend (rpc, subscribe, publish, refresh, sub_refresh proxies).
        self.proxies = self.rules.proxies or proxy_table(cfg)
        self.proxy_calls = ProxyCalls(self.proxies, self.spawn)
        self.timers.refresher = ProxyRefresher(self.rules, self.proxies, self.proxy_calls, self.membership)
        # proxy_connect_placement "shard": sockets that come with the connect proxy call to make.
        self.connect_proxy = ConnectProxy(cfg)
        self.rehoming = (
            Rehoming(self.connect_proxy, index, self.size, cfg.runtime_path, self.adopt, self.spawn, loop)
            if self.connect_proxy.enabled and self.connect_proxy.in_shards
            else None
        )
        # Emulation connections (http_stream, SSE) by session id, for the frames /emulation brings.
        self.emulations: dict[str, ClientConnection] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        runtime = self.cfg.runtime_path
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._receiver.start()
        publisher = Publisher(
            self.loop,
            self._zmq,
            paths.publish_endpoint(runtime, self.index),
            lambda channel: writer_for(channel, self.size) == self.index,
            self.redis.channels if self.redis is not None else None,
        )
        self.writer.sink = publisher
        if self.redis is not None:
            self.redis.channels.sink = publisher
        endpoints = [paths.publish_endpoint(runtime, i) for i in range(self.size)]
        self._subscriber = Subscriber(
            self.loop,
            self._zmq,
            endpoints,
            self.fanout.deliver,
            on_check=self.redis.check_requested if self.redis is not None else None,
        )
        self.restarts.subscriber = self.membership.data_plane = self._subscriber
        identity = paths.shard_identity(self.index)
        control = Responder(
            self.loop, self._zmq, paths.control_endpoint(runtime), identity, self.handle_router_request
        )
        mesh = self.mesh.open(self.loop, self._zmq, runtime, self.handle_peer_request)
        self._closables = [control, self._subscriber, publisher, *mesh]
        warm_up(self.cfg)
        log.info("shard %d ready: handoff socket %s", self.index, paths.handoff_path(runtime, self.index))
        frames.log_mask_implementation(log)

    async def serve(self) -> None:
        if self.redis is not None:
            self.redis.start()
        ticker = self.loop.create_task(every_second(self._tick, self._woke_late))
        self.spawn(announce_start(self.writer, self.mesh, self.boot_id, self.loop))
        store = None
        if self.engines.redis is not None:
            from broker.access.redis_store import RedisAccessStore

            store = RedisAccessStore(self.engines.redis, self.cfg.redis_prefix)
        self.spawn(load_access_rules(self.access, self.mesh, store))
        await self._stopping.wait()
        ticker.cancel()
        await self._drain()

    def request_stop(self) -> None:
        if self._stopping.is_set():
            if self.ctx.supervised:
                # Under the supervisor a repeated SIGTERM is usually the same stop reaching the whole
                # process group (systemd, a terminal); the supervisor escalates with SIGKILL itself.
                return
            log.warning("second stop signal: exiting now")
            os._exit(1)
        log.info("shutting down: disconnecting %d clients", len(self.hub))
        self._stopping.set()

    async def _drain(self) -> None:
        self._receiver.stop()
        for conn in list(self.hub.by_client.values()):
            assert isinstance(conn, ClientConnection)
            conn.close_with(errors.SHUTDOWN)
        deadline = time.monotonic() + self.cfg.shutdown_timeout
        while self._open_transports() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in self._open_transports():
            conn.abort()
        for closable in self._closables:
            closable.close()
        if self.user_index is not None:
            self.user_index.close()
        if self.redis is not None:
            self.redis.close()
        await self.engines.close()
        await self.proxy_calls.close()
        await self.connect_proxy.close()
        if self.rehoming is not None:
            self.rehoming.close()
        self._zmq.term()

    def _open_transports(self) -> list[ClientConnection]:
        return [conn for conn in self._live if conn.transport is not None]

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("shard task failed: %r", task.exception())

    # -- adopting connections --------------------------------------------------------------------

    def adopt(self, header: Header, data: bytes, fd: int) -> None:
        transport_name = header.transport
        if self._stopping.is_set():
            os.close(fd)
            return
        if header.ask:
            if self.rehoming is None:
                log.warning("refusing a handed-off connection with a connect proxy call to make")
                os.close(fd)
                return
            self.rehoming.receive(header, data, fd)
            return
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        sock.setblocking(False)
        conn = connection_for(self, header, data)
        if conn is None:
            log.warning("refusing a handed-off connection with transport %r", transport_name)
            sock.close()
            return
        self.spawn(self.loop.connect_accepted_socket(lambda: conn, sock))

    def attach(self, conn: ClientConnection) -> None:
        self._live.add(conn)

    def detach(self, conn: ClientConnection) -> None:
        self._live.discard(conn)
        self._backlog.discard(conn)
        if self.emulations.get(conn.state.session) is conn:
            del self.emulations[conn.state.session]
        self.unregister(conn)

    def proxy(self, conn: ClientConnection, spec: ProxySpec, body: dict[str, Any], done: Any) -> None:
        self.proxy_calls.call(spec, body, conn.state.proxy_headers, done)

    def emulation_started(self, conn: ClientConnection) -> None:
        self.emulations[conn.state.session] = conn

    def disconnect(self, conn: ClientConnection, reason: Disconnect) -> None:
        conn.close_with(reason)

    # -- subscriptions and publications ----------------------------------------------------------

    def publish(self, publication: Publication, done: Any, skip_history: bool = False) -> None:
        """Send a client's publication to its channel's writer; ``done(error, result)`` when it is out."""
        writer = writer_for(publication.channel, self.size)
        if writer != self.index:
            self.mesh.publish_remote(writer, publication, done, skip_history)
        elif not publication.kind and not self.writer.writing():
            self.spawn(self.writer.until_writing(lambda: self.publish(publication, done, skip_history)))
        else:
            writing = self.writer.write_publication(publication, skip_history=skip_history)
            task = start_eagerly(writing, client_outcome(done), self.loop)
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Any) -> None:
        """Ask every shard (``shards.peer_mesh``); presence with the Redis engine is read from Redis."""
        if self.redis is not None and self.redis.answers(method):
            self.redis.query(method, params, done)
        else:
            self.mesh.cluster_query(method, params, merge, done)

    # -- timers ----------------------------------------------------------------------------------

    def _woke_late(self, seconds: float) -> None:
        self.loop_lag = seconds

    def backlogged(self, conn: ClientConnection) -> None:
        """``conn``'s socket did not take all its bytes: counted in the queued bytes until it drains."""
        self._backlog.add(conn)

    def queued_bytes(self) -> int:
        """Bytes waiting to reach clients: in the transports' buffers of the sockets that fell behind."""
        total = 0
        for conn in list(self._backlog):
            transport = conn.transport
            size = transport.get_write_buffer_size() if transport is not None else 0
            if size:
                total += size
            else:
                self._backlog.discard(conn)
        return total

    def _tick(self, now: float) -> None:
        self.ctx.beat()
        if not self.ctx.parent_alive():
            log.error("supervisor is gone; shutting down")
            self.request_stop()
            return
        self.timers.tick(now)
        self.writer.maintain(now)
        self.access.forget_expired(time.time())
        if self.user_index is not None:
            self.user_index.tick()
        if isinstance(self.statuses, MemoryUserStatus):
            self.statuses.forget_expired(time.time())
        if self.redis is not None:
            self.redis.tick(now)
        if self.fanout.position_check_due(now):
            self.spawn(self.fanout.check_positions())

    # -- user status ------------------------------------------------------------------------------

    async def user_is_online(self, user: str) -> bool:
        """Whether ``user`` holds a connection here, or (Redis engine) on any node."""
        if self.hub.user_connections(user):
            return True
        if self.redis is None:
            return False
        try:
            return bool(await self.redis.roster.users.nodes_of(user))
        except Exception as exc:  # Redis unavailable: what this node knows
            log.warning("user index unavailable for the status of %r: %r", user, exc)
            return False

    def _user_gone(self, user: str) -> None:
        """The user's last connection here closed: that is when they were last online (from here)."""
        if isinstance(self.statuses, MemoryUserStatus):
            self.statuses.record([user], 1, int(time.time()))
        else:
            self.spawn(self._record_online(user))

    async def _record_online(self, user: str) -> None:
        try:
            await self.statuses.set_online([user], int(time.time()))
        except Exception as exc:
            log.warning("could not record when %r was last online: %r", user, exc)

    def update_user_status(self, user: str) -> None:
        """A client's ``update_user_status`` RPC: its user is active now."""
        if isinstance(self.statuses, MemoryUserStatus):
            self.statuses.record([user], 0, int(time.time()))
        else:
            self.spawn(self.statuses.set_active([user], int(time.time())))

    # -- control plane ---------------------------------------------------------------------------

    def handle_router_request(self, method: str, params: Any) -> Any:
        return _handle(ROUTER_HANDLERS, self, method, params)

    def handle_peer_request(self, method: str, params: Any) -> Any:
        return _handle(PEER_HANDLERS, self, method, params)

    def uptime(self) -> float:
        return time.monotonic() - self.started_at


def _handle(handlers: dict[str, Any], host: Shard, method: str, params: Any) -> Any:
    handler = handlers.get(method)
    if handler is None:
        raise errors.METHOD_NOT_FOUND()
    return handler(host, params if isinstance(params, dict) else {})


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
    # Held until exit: the same shard twice on this directory, or next to a whole server, is refused.
    lock = lock_role(cfg.runtime_path, role)
    try:
        run(cfg, index, standalone_context(role))
    finally:
        lock.release()
    return 0
