"""The shard process: adopts client sockets from the router and owns them until they end.

Theory of operation
-------------------
Boot: listen for handed-off sockets on ``<runtime_dir>/shard-K.handoff``, connect the control DEALER to
the router, bind this shard's PUB (publications of the channels it writes) and connect its SUB to every
shard's PUB, join the peer mesh (requests between shards), start the one-second ticker, report ready,
then announce the start to the other shards and hold publications until they are ready for this
writer's new epochs (:meth:`Shard._announce_start`).
Then four things drive the shard, all on one event loop:

* a handoff (descriptor + the bytes the router read) → the socket is adopted with
  ``connect_accepted_socket``; the transport adapter verifies the token and, on success, the connection
  enters the hub (:meth:`Shard.admit`);
* a control request from the router (connections, disconnect, publish …) → :mod:`shards.router_requests`,
  one from a peer shard (publish to this writer, recover, presence, shard_started …) →
  :mod:`shards.peer_requests`;
* a publication on the SUB socket → fan-out to the local subscribers, encoded once per connection kind
  and written with one ``write`` per connection per loop iteration (:meth:`Shard.deliver`);
* the ticker → heartbeat to the supervisor, pings for the connections whose ping second it is (spread
  over ``ping_interval`` buckets so that they never all fire at once; a tick that wakes late does the
  seconds it missed once, see :mod:`shards.ticker`), pong checks, expiry (:mod:`shards.deadlines`).

SIGTERM: stop taking handoffs, send every client disconnect 3001 "shutdown", wait for the streams to
close until ``shutdown_timeout``, abort the rest, exit. A second SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
import uvloop
import zmq

from broker import errors
from broker.auth import TokenVerifier
from broker.channels import ChannelOptions, ChannelRules
from broker.config import Config
from broker.engine.base import HistoryEngine
from broker.engine.memory import MemoryEngine
from broker.errors import ClientError, Disconnect
from broker.hashing import shard_for, writer_for
from broker.ids import new_id
from broker.ipc import paths
from broker.ipc.channel_counts import open_counts
from broker.ipc.control import Raw, RemoteError, Requester, Responder, ShardUnavailable, client_error
from broker.ipc.handoff import HandoffReceiver, Header
from broker.ipc.pubsub import Publication, Publisher, Subscriber
from broker.lifecycle import ChildContext, standalone_context
from broker.protocol.codec import get_codec
from broker.protocol.state import SERVER_SIDE_SOURCES, ConnectionState
from broker.protocol.uni import HTTP_STREAM, SSE
from broker.runtime_dir import lock_role
from broker.websocket import frames
from shards.connection import ClientConnection
from shards.deadlines import Deadlines
from shards.fanout import FanOut
from shards.hub import Hub
from shards.peer_requests import PEER_HANDLERS, publication_params
from shards.router_requests import ROUTER_HANDLERS, warm_up
from shards.ticker import PingWheel
from shards.uni import UniConnection
from shards.ws import UniWsConnection, WsConnection

log = logging.getLogger("switchboard.shard")

UNI_FRAMINGS = {"uni_http_stream": HTTP_STREAM, "uni_sse": SSE}
PEER_TIMEOUT = 5.0
POSITION_CHECK_INTERVAL = 40.0
# A (re)started writer holds its first publications at most this long while the other shards end the
# positioned subscriptions of its channels and subscribe to its new PUB (below the router's
# api_shard_timeout, so that a held publish is answered rather than timed out).
WRITER_HOLD_TIMEOUT = 3.0
# How long a shard waits for the subscriptions it ended for a restarted writer to come back.
RESUBSCRIBE_WAIT = 1.5


class Shard(FanOut):
    def __init__(self, cfg: Config, index: int, ctx: ChildContext, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.index = index
        self.size = cfg.num_shards
        self.ctx = ctx
        self.loop = loop
        self.pid = os.getpid()
        self.counts = open_counts(cfg)
        if self.counts is not None:
            self.counts.reset_column(index)  # nothing left from a previous life of this shard
        self._counts_full = False
        self.hub = Hub(
            on_first_subscriber=self._channel_added,
            on_last_subscriber=self._channel_removed,
            on_count=self._channel_count if self.counts is not None else None,
        )
        self.verifier = TokenVerifier.for_connections(cfg)
        self.rules = ChannelRules.from_config(cfg)
        # History of the channels this shard writes (see broker.hashing.writer_for).
        self.engine: HistoryEngine = MemoryEngine()
        # join_leave channels this shard writes: channel → client → its join event. Kept so that the
        # clients of a shard that died can be announced as gone once it starts again.
        self.members: dict[str, dict[str, Publication]] = {}
        # Recent recovery answers (shards.peer_requests.recover): key → (stream top when made, JSON answer).
        self.recovery_answers: dict[tuple[Any, ...], tuple[Any, Raw]] = {}
        # Identical questions to a writer already on their way: key → callbacks waiting for the answer.
        self._inflight: dict[tuple[str, bytes], list[Any]] = {}
        self.started_at = time.monotonic()
        self._pings: PingWheel[ClientConnection] = PingWheel(cfg.ping_interval, cfg.pong_timeout, time.time())
        # Expiring connections (client id) and subscriptions ((client id, channel)); a key leaves when
        # its connection or subscription ends, so closed connections hold nothing until their expiry.
        self._expiry: Deadlines[str] = Deadlines()
        self._sub_expiry: Deadlines[tuple[str, str]] = Deadlines()
        self._stopping = asyncio.Event()
        self._zmq: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._receiver = HandoffReceiver(loop, paths.handoff_path(cfg.runtime_path, index), self.adopt)
        self._control: Responder | None = None
        self._publisher: Publisher | None = None
        self._subscriber: Subscriber | None = None
        self._peer_requests: Requester | None = None
        self._peer_answers: list[Responder] = []
        self._adoptions: set[asyncio.Task[Any]] = set()
        # Every adopted connection whose socket is still open, registered in the hub or not.
        self._live: set[ClientConnection] = set()
        self._dirty: list[ClientConnection] = []
        self._next_position_check = time.time() + POSITION_CHECK_INTERVAL
        self._flush_scheduled = False
        # Set once the other shards know this writer started afresh (see _announce_start).
        self._writing = asyncio.Event()
        self.boot_id = new_id()
        # The boot of each other shard already handled: its announcement is repeated until answered.
        self._peer_boots: dict[int, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        runtime = self.cfg.runtime_path
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._receiver.start()
        self._publisher = Publisher(
            self.loop,
            self._zmq,
            paths.publish_endpoint(runtime, self.index),
            lambda channel: writer_for(channel, self.size) == self.index,
        )
        self._subscriber = Subscriber(
            self.loop,
            self._zmq,
            [paths.publish_endpoint(runtime, i) for i in range(self.size)],
            self.deliver,
        )
        identity = paths.shard_identity(self.index)
        self._control = Responder(
            self.loop, self._zmq, paths.control_endpoint(runtime), identity, self.handle_router_request
        )
        self._peer_requests = Requester(self.loop, self._zmq, paths.peer_endpoint(runtime, self.index))
        self._peer_answers = [
            Responder(
                self.loop, self._zmq, paths.peer_endpoint(runtime, i), identity, self.handle_peer_request
            )
            for i in range(self.size)
            if i != self.index
        ]
        warm_up(self.cfg)
        log.info("shard %d ready: handoff socket %s", self.index, paths.handoff_path(runtime, self.index))
        masking = frames.mask_implementation()
        if masking == frames.MASK_C:
            log.info("WebSocket unmasking: %s", masking)
        else:
            log.warning("WebSocket unmasking: %s", masking)

    async def serve(self) -> None:
        ticker = self.loop.create_task(self._tick_loop())
        self._spawn(self._announce_start())
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
        for closable in (
            self._control,
            self._peer_requests,
            self._subscriber,
            self._publisher,
            *self._peer_answers,
        ):
            if closable is not None:
                closable.close()
        self._zmq.term()

    def _open_transports(self) -> list[ClientConnection]:
        return [conn for conn in self._live if conn.transport is not None]

    # -- adopting connections --------------------------------------------------------------------

    def adopt(self, header: Header, data: bytes, fd: int) -> None:
        transport_name = header.transport
        if self._stopping.is_set():
            os.close(fd)
            return
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            raise
        sock.setblocking(False)
        protocol = header.protocol
        state = ConnectionState(header.client, new_id(), transport_name, protocol, time.time())
        conn: ClientConnection
        if transport_name in UNI_FRAMINGS:
            conn = UniConnection(self, state, UNI_FRAMINGS[transport_name], data)
        elif transport_name == "websocket":
            conn = WsConnection(self, state, get_codec(protocol), data)
        elif transport_name == "uni_websocket":
            conn = UniWsConnection(self, state, data)
        else:
            log.warning("refusing a handed-off connection with transport %r", transport_name)
            sock.close()
            return
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: conn, sock))
        self._adoptions.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[Any]) -> None:
        self._adoptions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("adopting a socket failed: %s", task.exception())

    def attach(self, conn: ClientConnection) -> None:
        self._live.add(conn)

    def detach(self, conn: ClientConnection) -> None:
        self._live.discard(conn)
        self.unregister(conn)

    def admit(self, conn: ClientConnection, ready: Callable[[], None] | None = None) -> Disconnect | None:
        """Enter a connection that passed connect into every index; refuse it over the user's limit.

        ``ready`` is called once the data plane delivers every channel the connection starts with (its
        server-side subscriptions), so that the connect reply never precedes a lost publication.
        """
        state = conn.state
        limit = self.cfg.client_user_connection_limit
        # All of a user's connections live on this shard, so the count here is the user's count.
        if limit and state.user and len(self.hub.user_connections(state.user)) >= limit:
            return errors.CONNECTION_LIMIT
        try:
            self.hub.add(conn)
        except ValueError:
            log.error("duplicate client id %s", state.client)
            return errors.DISCONNECT_INTERNAL
        self._pings.add(conn, state.connected_at)
        if state.expire_at:
            self._expiry.set(state.client, state.expire_at)
        log.debug("client %s connected: user=%r transport=%s", state.client, state.user, state.transport)
        channels = list(state.channels)
        waiting = [len(channels)]

        def one_ready(channel: str) -> None:
            if state.client in self.hub.by_client and channel in state.channels:
                self._presence_event(conn, channel, "join")
            waiting[0] -= 1
            if waiting[0] == 0 and ready is not None:
                ready()

        if not channels:
            if ready is not None:
                ready()
            return None
        for channel in channels:
            self._when_ready(channel, lambda channel=channel: one_ready(channel))  # type: ignore[misc]
        return None

    def _when_ready(self, channel: str, callback: Callable[[], None]) -> None:
        if self._subscriber is None:
            callback()
        else:
            self._subscriber.when_ready(channel, callback)

    def unregister(self, conn: ClientConnection) -> None:
        if self.hub.remove(conn):
            state = conn.state
            self._pings.discard(conn, state.connected_at)
            self._expiry.discard(state.client)
            for channel in state.sub_expires or ():
                self._sub_expiry.discard((state.client, channel))
            log.debug("client %s gone", conn.state.client)
            for channel in conn.state.channels:
                self._presence_event(conn, channel, "leave")

    def disconnect(self, conn: ClientConnection, reason: Disconnect) -> None:
        conn.close_with(reason)

    # -- subscriptions and publications ----------------------------------------------------------

    def _channel_count(self, channel: str, count: int) -> None:
        assert self.counts is not None
        try:
            stored = self.counts.set(channel, self.index, count)
        except ValueError:
            stored = False  # a channel name too long for the table: the router asks the shards
        if not stored and not self._counts_full:
            self._counts_full = True
            log.warning("channel counts table is full; the router falls back to asking every shard")

    def _channel_added(self, channel: str) -> None:
        if self._subscriber is not None:
            self._subscriber.subscribe(channel)

    def _channel_removed(self, channel: str) -> None:
        if self._subscriber is not None:
            self._subscriber.release(channel)

    def subscribe(
        self, conn: ClientConnection, channel: str, source: int, ready: Callable[[], None] | None = None
    ) -> None:
        """Subscribe a connection; ``ready`` (and the join announcement) once publications will reach it."""
        self.hub.subscribe(conn, channel, source)

        def now_ready() -> None:
            if conn.state.client in self.hub.by_client and channel in conn.state.channels:
                self._presence_event(conn, channel, "join")
            if ready is not None:
                ready()

        self._when_ready(channel, now_ready)

    def unsubscribe(self, conn: ClientConnection, channel: str) -> None:
        if channel in conn.state.channels:
            self.hub.unsubscribe(conn, channel)
            self._sub_expiry.discard((conn.state.client, channel))
            self._presence_event(conn, channel, "leave")

    def publish(self, publication: Publication, done: Any) -> None:
        """Send a client's publication to its channel's writer; ``done(error, result)`` when it is out."""
        writer = writer_for(publication.channel, self.size)
        if writer == self.index and not publication.kind and not self.writing():
            self._spawn(self.until_writing(lambda: self.publish(publication, done)))
            return
        if writer == self.index:
            try:
                result = self.write_publication(publication)
            except ClientError as err:
                done(err, None)
                return
            done(None, result)
            return
        self._spawn(self._publish_remote(writer, publication, done))

    async def _publish_remote(self, writer: int, publication: Publication, done: Any) -> None:
        assert self._peer_requests is not None
        params = publication_params(publication)
        try:
            result = await self._peer_requests.request(
                paths.shard_identity(writer), "publish", params, PEER_TIMEOUT
            )
        except (ShardUnavailable, RemoteError) as exc:
            done(client_error(exc, f"publish to {publication.channel}", errors.INTERNAL), None)
            return
        done(None, result)

    def write_publication(
        self, publication: Publication, *, skip_history: bool = False, idempotency_key: str = ""
    ) -> dict[str, Any]:
        """As the channel's writer: give the publication its place in the stream and send it on.

        The offset is assigned (and the publication stored) before it fans out, so the offset a client
        sees in a push is the one history returns. A repeated idempotency key returns the first result
        and sends nothing.
        """
        assert self._publisher is not None
        now = time.time()
        publication.time_ms = int(now * 1000)
        if not publication.kind:
            options = self.rules.options_for(publication.channel)
            result = self.engine.publish(
                publication,
                history_size=options.history_size,
                history_ttl=options.history_ttl,
                history_meta_ttl=self.meta_ttl(options),
                now=now,
                skip_history=skip_history,
                idempotency_key=idempotency_key,
            )
            if result.duplicate:
                return _position_result(result.offset, result.epoch)
        elif publication.kind == "join":
            self.members.setdefault(publication.channel, {})[publication.client] = publication
        elif publication.kind == "leave":
            joined = self.members.get(publication.channel)
            if joined is not None:
                joined.pop(publication.client, None)
                if not joined:
                    del self.members[publication.channel]
        if not self._publisher.publish(publication):
            raise errors.INTERNAL()
        return _position_result(publication.offset, publication.epoch)

    def forget_shard(self, index: int) -> int:
        """Shard ``index`` (re)started: its former clients left every join_leave channel we write."""
        gone = 0
        for channel, joined in list(self.members.items()):
            for client, join in list(joined.items()):
                if shard_for(join.user or "", client, self.size) != index:
                    continue
                leave = Publication(
                    channel,
                    b"",
                    user=join.user,
                    client=client,
                    conn_info=join.conn_info,
                    chan_info=join.chan_info,
                    kind="leave",
                )
                self.write_publication(leave)
                gone += 1
        if gone:
            log.info("announced %d leaves for the clients shard %d had before it restarted", gone, index)
        return gone

    async def _announce_start(self) -> None:
        """Tell the other shards this one started; publish only once they are ready for it.

        A restarted writer lost the streams of its channels: it starts them over in new epochs. Before
        it assigns the first offset, every other shard ends the positioned subscriptions of those
        channels (2500 / 3010, see :meth:`peer_restarted`), so that each client resubscribes and is
        told ``recovered: false`` about what the old writer took with it, then positions itself in the
        new epoch before anything is published in it. Telling was chosen over resuming the old epoch
        from the offsets the other shards saw: a publication the old writer acknowledged but died
        before sending is seen by nobody, so its offset would be given again to another publication
        and the loss would go unnoticed.

        Publications wait (:meth:`until_writing`) until every shard answered, or ``WRITER_HOLD_TIMEOUT``:
        a shard that does not answer in time still ends its clients' subscriptions when the first
        publication of a new epoch reaches it (gap detection). The announcement also makes the other
        shards emit leaves for the clients this shard lost.
        """
        assert self._peer_requests is not None
        waiting = {i for i in range(self.size) if i != self.index}
        started = time.monotonic()
        deadline = started + 15
        self.loop.call_later(WRITER_HOLD_TIMEOUT, self._open_writing, "timeout")
        while waiting and time.monotonic() < deadline:
            left = WRITER_HOLD_TIMEOUT - (time.monotonic() - started)
            timeout = left if not self._writing.is_set() and left > 0.1 else PEER_TIMEOUT
            ordered = sorted(waiting)
            outcomes = await asyncio.gather(
                *(
                    self._peer_requests.request(
                        paths.shard_identity(index),
                        "shard_started",
                        {"index": self.index, "boot": self.boot_id},
                        timeout,
                    )
                    for index in ordered
                ),
                return_exceptions=True,
            )
            for index, outcome in zip(ordered, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    waiting.discard(index)
            if not waiting:
                self._open_writing("every shard answered")
            else:
                await asyncio.sleep(0.2)
        self._open_writing("announcement over")

    def _open_writing(self, why: str) -> None:
        if not self._writing.is_set():
            self._writing.set()
            log.info("shard %d publishes from now on (%s)", self.index, why)

    def writing(self) -> bool:
        """Publications may be given offsets (the other shards know this writer started afresh)."""
        return self._writing.is_set()

    async def until_writing(self, write: Callable[[], Any]) -> Any:
        """``write()`` once publications may be given offsets."""
        await self._writing.wait()
        return write()

    async def peer_restarted(self, index: int, boot: str) -> dict[str, Any]:
        """Shard ``index`` (re)started: leaves for its lost clients, and its channels' streams are new.

        Ends the positioned subscriptions of the channels it writes (their epoch is gone), subscribes to
        its new PUB again and waits for its welcome, then for the ended subscriptions to come back —
        each wait bounded — so that its first publications reach every subscriber here in the new epoch.
        """
        if self._peer_boots.get(index) == boot:
            return {"leaves": 0, "ended": 0}  # a repeat of an announcement already handled
        self._peer_boots[index] = boot
        leaves = self.forget_shard(index)
        if self._subscriber is None:
            return {"leaves": leaves, "ended": 0}
        channels = {ch for ch in self._subscriber.channels if writer_for(ch, self.size) == index}
        ended = self.cut_positioned(channels)
        count = len(ended)
        self._subscriber.rearm(channels)
        welcomed: list[asyncio.Future[None]] = []
        for channel in channels:
            future: asyncio.Future[None] = self.loop.create_future()
            self._subscriber.when_ready(channel, _resolver(future))
            welcomed.append(future)
        if welcomed:
            await asyncio.wait(welcomed)  # bounded: when_ready gives up after READY_TIMEOUT
        deadline = time.monotonic() + RESUBSCRIBE_WAIT
        while ended and time.monotonic() < deadline:
            ended = [(conn, ch) for conn, ch in ended if not self.resubscribed(conn, ch)]
            if ended:
                await asyncio.sleep(0.02)
        if ended:
            log.info("%d subscriptions ended for shard %d did not come back in time", len(ended), index)
        return {"leaves": leaves, "ended": count}

    def history_options(self, channel: str) -> ChannelOptions:
        """The channel's options, or 108 when it keeps no history."""
        options = self.rules.options_for(channel)
        if not options.history_enabled:
            raise errors.NOT_AVAILABLE()
        return options

    def meta_ttl(self, options: ChannelOptions) -> float:
        return options.history_meta_ttl or self.cfg.global_history_meta_ttl

    # -- questions for the whole cluster (client presence, history) ------------------------------

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Any) -> None:
        """Ask every shard (this one directly), then ``done(None, merge(parts))``; silent ones are skipped."""
        # Through JSON and back, so that local and remote parts have the same shape.
        local = orjson.loads(orjson.dumps(PEER_HANDLERS[method](self, params)))
        if self.size == 1:
            done(None, merge([local]))
            return
        self._spawn(self._gather_peers(method, params, local, merge, done))

    async def _gather_peers(
        self, method: str, params: dict[str, Any], local: Any, merge: Any, done: Any
    ) -> None:
        assert self._peer_requests is not None
        others = [i for i in range(self.size) if i != self.index]
        outcomes = await asyncio.gather(
            *(
                self._peer_requests.request(paths.shard_identity(i), method, params, PEER_TIMEOUT)
                for i in others
            ),
            return_exceptions=True,
        )
        parts = [local]
        for index, outcome in zip(others, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("shard %d did not answer %s: %s", index, method, outcome)
            else:
                parts.append(outcome)
        done(None, merge(parts))

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Any) -> None:
        """Ask the channel's writer shard (this one directly when it is the writer).

        Identical questions in flight at the same time (many clients subscribing or recovering from
        the same position after an outage) share one request and one answer.
        """
        writer = writer_for(channel, self.size)
        if writer == self.index:
            try:
                result = PEER_HANDLERS[method](self, params)
            except ClientError as err:
                done(err, None)
                return
            done(None, orjson.loads(result.json if isinstance(result, Raw) else orjson.dumps(result)))
            return
        key = (method, orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
        waiting = self._inflight.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        self._inflight[key] = [done]

        def answered(err: ClientError | None, result: Any) -> None:
            for callback in self._inflight.pop(key, []):
                callback(err, result)

        self._spawn(self._ask_peer(writer, method, params, answered))

    async def _ask_peer(self, index: int, method: str, params: dict[str, Any], done: Any) -> None:
        assert self._peer_requests is not None
        try:
            result = await self._peer_requests.request(
                paths.shard_identity(index), method, params, PEER_TIMEOUT
            )
        except (ShardUnavailable, RemoteError) as exc:
            done(client_error(exc, f"{method} on shard {index}", errors.INTERNAL), None)
            return
        done(None, result)

    def _spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self._adoptions.add(task)
        task.add_done_callback(self._adoptions.discard)

    # -- write coalescing ------------------------------------------------------------------------

    def mark_dirty(self, conn: ClientConnection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # -- timers ----------------------------------------------------------------------------------

    def expiry_changed(self, conn: ClientConnection) -> None:
        if conn.state.client in self.hub.by_client:
            self._expiry.set(conn.state.client, conn.state.expire_at)

    def sub_expiry_changed(self, conn: ClientConnection, channel: str) -> None:
        expires = conn.state.sub_expires
        key = (conn.state.client, channel)
        if expires and channel in expires and conn.state.client in self.hub.by_client:
            self._sub_expiry.set(key, expires[channel])
        else:
            self._sub_expiry.discard(key)

    async def _tick_loop(self) -> None:
        while True:
            # Wake at the next whole second of the clock as it is now: a tick that ran late is not
            # followed by a burst of ticks for the seconds it missed (the wheel catches them up at once).
            await asyncio.sleep(max(0.0, math.floor(time.time()) + 1 - time.time()))
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
        to_ping, to_check = self._pings.advance(now)
        for conn in to_ping:
            conn.ping(now)
        for conn in to_check:
            conn.check_pong(now)
        self._expire_connections(now)
        self._expire_subscriptions(now)
        self.engine.sweep(now, budget=1000)
        if now >= self._next_position_check:
            self._next_position_check = now + POSITION_CHECK_INTERVAL
            self._spawn(self._check_positions())

    def _expire_connections(self, now: float) -> None:
        for client, expire_at in self._expiry.pop_due(now - self.cfg.client_expired_close_delay):
            found = self.hub.by_client.get(client)
            if isinstance(found, ClientConnection) and found.state.expire_at == expire_at:
                found.close_with(errors.CONNECTION_EXPIRED)

    def _expire_subscriptions(self, now: float) -> None:
        for (client, channel), expire_at in self._sub_expiry.pop_due(
            now - self.cfg.client_expired_sub_close_delay
        ):
            conn = self.hub.by_client.get(client)
            if not isinstance(conn, ClientConnection):
                continue
            expires = conn.state.sub_expires
            if not expires or expires.get(channel) != expire_at:
                continue  # refreshed or gone since
            source = conn.state.channels.get(channel)
            if source in SERVER_SIDE_SOURCES:
                conn.close_with(errors.SUBSCRIPTION_EXPIRED)
                continue
            self.server_unsubscribe(conn, channel, 2501, "subscription expired")

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None:
        if channel not in conn.state.channels:
            return
        self.unsubscribe(conn, channel)
        session = getattr(conn, "session", None)
        if session is not None and hasattr(session, "forget_channel"):
            session.forget_channel(channel)
        if conn.state.positions is not None:
            conn.state.positions.pop(channel, None)
        conn.send_push({"channel": channel, "unsubscribe": {"code": code, "reason": reason}})

    # -- control plane ---------------------------------------------------------------------------

    def handle_router_request(self, method: str, params: Any) -> Any:
        return self._handle(ROUTER_HANDLERS, method, params)

    def handle_peer_request(self, method: str, params: Any) -> Any:
        return self._handle(PEER_HANDLERS, method, params)

    def _handle(self, handlers: dict[str, Any], method: str, params: Any) -> Any:
        handler = handlers.get(method)
        if handler is None:
            raise errors.METHOD_NOT_FOUND()
        return handler(self, params if isinstance(params, dict) else {})

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def rss_bytes(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0


def _resolver(future: asyncio.Future[None]) -> Callable[[], None]:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    return resolve


def _position_result(offset: int, epoch: str) -> dict[str, Any]:
    return {"offset": offset, "epoch": epoch} if offset else {}


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
