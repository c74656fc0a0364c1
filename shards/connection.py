"""What every client connection of a shard has in common, whatever its transport.

A connection belongs to one *kind* (protocol + framing, see :mod:`shards.encoding`). Outgoing bytes are
queued with ``enqueue`` and written once per loop iteration by the shard (``flush``), so that several
publications reaching one client in a burst cost one ``write``. The bytes queued in our buffer plus the
transport's unsent bytes are bounded by ``client_queue_max_size``: a client that does not read is cut with
3008 "slow" rather than letting the shard's memory grow (the farewell is best effort: written behind the
transport's buffer, which the client has ``SLOW_CLOSE_DEADLINE`` to read before the socket is reset).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from broker import errors
from broker.access.rules import AccessRules
from broker.auth import TokenVerifier
from broker.channels import ChannelRules
from broker.config import Config
from broker.errors import Disconnect
from broker.metrics.counters import ShardCounters
from broker.protocol.state import ConnectionState
from broker.proxy.table import ProxySpec, ProxyTable
from broker.publication import Publication
from shards.hub import Hub

log = logging.getLogger("switchboard.shard")

# How long a client cut for being slow has to take its buffered messages and the 3008 farewell.
SLOW_CLOSE_DEADLINE = 2.0


class ConnectionHost(Protocol):
    """What a client connection needs of its shard (``shards.main.Shard`` is the one in service)."""

    @property
    def cfg(self) -> Config: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def counters(self) -> ShardCounters: ...

    @property
    def verifier(self) -> TokenVerifier: ...

    @property
    def access(self) -> AccessRules: ...

    def update_user_status(self, user: str) -> None: ...

    @property
    def rules(self) -> ChannelRules: ...

    def attach(self, conn: ClientConnection) -> None: ...

    def detach(self, conn: ClientConnection) -> None: ...

    @property
    def index(self) -> int: ...

    @property
    def proxies(self) -> ProxyTable: ...

    def proxy(
        self,
        conn: ClientConnection,
        spec: ProxySpec,
        body: dict[str, Any],
        done: Callable[[Any, float], None],
    ) -> None:
        """Call a proxy for ``conn``: ``done(answer, now)``, ``done(None, now)`` when the call failed."""

    def emulation_started(self, conn: ClientConnection) -> None:
        """An emulation connection started: ``/emulation`` frames for its session may come."""

    def unregister(self, conn: ClientConnection) -> None: ...

    def mark_dirty(self, conn: ClientConnection) -> None: ...

    def backlogged(self, conn: ClientConnection) -> None: ...

    def info_changed(self, conn: ClientConnection) -> None: ...

    def admit(self, conn: ClientConnection, ready: Callable[[], None] | None = None) -> Disconnect | None: ...

    def subscribe(
        self, conn: ClientConnection, channel: str, source: int, ready: Callable[[], None] | None = None
    ) -> None: ...

    def unsubscribe(self, conn: ClientConnection, channel: str) -> None: ...

    def publish(self, publication: Publication, done: Any, skip_history: bool = False) -> None: ...

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Any) -> None: ...

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Any) -> None: ...

    def expiry_changed(self, conn: ClientConnection) -> None: ...

    def sub_expiry_changed(self, conn: ClientConnection, channel: str) -> None: ...


class ClientConnection(asyncio.Protocol):
    __slots__ = ("_pending", "_pending_size", "closed", "kind", "shard", "state", "transport")

    def __init__(self, shard: ConnectionHost, state: ConnectionState, kind: str) -> None:
        self.kind = kind  # protocol + framing: the key of shards.encoding.ENCODERS
        self.shard = shard
        self.state = state
        self.transport: asyncio.Transport | None = None
        self._pending: list[bytes] | None = None
        self._pending_size = 0
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.shard.attach(self)
        try:
            self.started()
        except Exception as exc:
            self.failed(exc)

    def failed(self, exc: Exception) -> None:
        """Input raised something unexpected: one log line, 3004 to the client, out of every index.

        An exception escaping to the event loop would log a traceback per message and leave the
        connection listed (when it came with the handed-off first bytes) although nothing serves it.
        """
        log.error("client %s: error on its input, disconnecting: %r", self.state.client, exc)
        try:
            self.close_with(errors.DISCONNECT_INTERNAL)
        except Exception as again:
            log.error("client %s: cannot say goodbye: %r", self.state.client, again)
            self.abort()

    def started(self) -> None:
        """The socket is adopted: process the bytes the router handed over."""

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pending = None
        self.shard.detach(self)
        self.transport = None

    # -- output ----------------------------------------------------------------------------------

    def enqueue(self, data: bytes) -> None:
        """Queue bytes for the next flush; never blocks, never awaits."""
        if self.closed or not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._pending_size = len(data)
            self.shard.mark_dirty(self)
        else:
            self._pending.append(data)
            self._pending_size += len(data)
        if self._pending_size > self.shard.cfg.client_queue_max_size:
            self.close_with(errors.SLOW)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        transport = self.transport
        if not pending or transport is None or transport.is_closing():
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self.shard.counters.sent_to_client(self.state.transport, len(pending), self._pending_size)
        buffered = transport.get_write_buffer_size()
        if buffered > self.shard.cfg.client_queue_max_size:
            self.close_with(errors.SLOW)
        elif buffered:
            self.shard.backlogged(self)

    def send_push(self, body: dict[str, Any]) -> None:
        """A push built for this connection alone (subscribe, unsubscribe, refresh …)."""
        from shards.encoding import ENCODERS

        self.enqueue(ENCODERS[self.kind](body))

    def ping(self, now: float) -> None:
        raise NotImplementedError

    def check_pong(self, now: float) -> None:
        """Called ``pong_timeout`` after a ping; transports that expect pongs disconnect here."""

    # -- ending ----------------------------------------------------------------------------------

    def close_with(self, disconnect: Disconnect) -> None:
        """Tell the client why (as its transport allows), end the connection and forget it at once."""
        self.shard.unregister(self)
        if self.closed:
            return
        self.closed = True
        self.shard.counters.server_disconnect(disconnect.code)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if disconnect.code == errors.SLOW.code:
            # The client is not reading: queuing more would never drain. Drop what is queued (whole
            # messages only ever reach the transport), put the farewell behind what the transport holds
            # (it is never more than a little over the queue limit), and give the kernel a short while
            # to deliver it before the socket is reset, whether or not the client reads again.
            self._pending = None
            farewell = self.farewell(disconnect)
            if farewell:
                transport.write(farewell)
            transport.close()
            self.shard.loop.call_later(SLOW_CLOSE_DEADLINE, transport.abort)
            return
        self.flush_before_close()
        farewell = self.farewell(disconnect)
        if farewell:
            transport.write(farewell)
        transport.close()

    def flush_before_close(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self.transport is not None:
            self.transport.write(b"".join(pending))
            self.shard.counters.sent_to_client(self.state.transport, len(pending), self._pending_size)

    def farewell(self, disconnect: Disconnect) -> bytes:
        """The bytes that tell the client it is disconnected and end the stream."""
        return b""

    def abort(self) -> None:
        self.shard.unregister(self)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
