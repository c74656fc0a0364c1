"""WebSocket connections adopted by a shard: bidirectional (JSON / Protobuf) and unidirectional.

The router finished the upgrade and read the first message; the shard feeds every byte it was handed to
a :class:`broker.websocket.frames.ServerConnection` first, then whatever the socket delivers. Complete
messages go to the sans-I/O :class:`broker.protocol.client.ClientSession`; its replies leave as one
WebSocket message per read. The connection object is also the session's host, so that the session reaches
the shard (indexes, publications, timers) without the shard keeping a session → connection map.

A disconnect on a bidirectional WebSocket is a close frame carrying the code and reason (no disconnect
push, as in Centrifugo). After sending it the connection keeps reading for up to a second for the peer's
close frame, because closing a socket with unread input makes the kernel reset it and the close frame
could be lost.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from broker import errors
from broker.errors import Disconnect
from broker.protocol.client import ClientSession
from broker.protocol.codec import Codec
from broker.protocol.state import ConnectionState
from broker.protocol.uni import UniSession
from broker.websocket.frames import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    Close,
    Message,
    ProtocolError,
    ServerConnection,
    encode_frame,
)
from shards.connection import ClientConnection, ConnectionHost
from shards.session_host import SessionHosting
from shards.uni import recover_then_flush

if TYPE_CHECKING:
    pass

log = logging.getLogger("switchboard.shard")

CLOSE_WAIT = 1.0


class _WebSocketBase(ClientConnection):
    __slots__ = ("_initial", "ws")

    def __init__(self, shard: ConnectionHost, state: ConnectionState, kind: str, initial: bytes) -> None:
        super().__init__(shard, state, kind)
        self.ws = ServerConnection(max_message_size=shard.cfg.websocket_message_size_limit)
        self._initial: bytes | None = initial

    def started(self) -> None:
        data, self._initial = self._initial or b"", None
        if data:
            self._receive(data)  # connection_made catches what this raises

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as exc:
            self.failed(exc)

    def _receive(self, data: bytes) -> None:
        events = self.ws.receive_data(data)
        now = time.time()
        for event in events:
            if type(event) is Message:
                if not self.closed:
                    self.shard.counters.received_from_client(self.state.transport, len(event.payload))
                    self.on_message(event.payload, now)
            elif type(event) is Close:
                self._peer_closed()
                return
            elif type(event) is ProtocolError:
                log.info("client %s broke the WebSocket protocol: %s", self.state.client, event.reason)
                self._peer_failed()
                return
        control = self.ws.data_to_send()
        if control:
            self.enqueue(control)
        self.after_input()

    def on_message(self, payload: bytes, now: float) -> None:
        raise NotImplementedError

    def after_input(self) -> None:
        """Hook run after a read's events are handled."""

    def _peer_closed(self) -> None:
        """The peer closed (or answered our close): reply if needed and end the TCP connection."""
        self.shard.unregister(self)
        self.closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush_before_close()
            reply = self.ws.data_to_send()
            if reply:
                transport.write(reply)
            transport.close()

    def _peer_failed(self) -> None:
        """The peer broke the protocol: send our close frame, but keep reading a little before closing.

        Closing at once would make the kernel reset the connection if more of the peer's input arrives,
        and the client could lose the close frame that tells it why (e.g. 1009 message too big).
        """
        self.shard.unregister(self)
        self.closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush_before_close()
            reply = self.ws.data_to_send()
            if reply:
                transport.write(reply)
            self.shard.loop.call_later(CLOSE_WAIT, self._close_transport)

    def farewell(self, disconnect: Disconnect) -> bytes:
        return self.ws.send_close(disconnect.code, disconnect.reason)

    def close_with(self, disconnect: Disconnect) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing() or disconnect.code == errors.SLOW.code:
            super().close_with(disconnect)
            return
        self.shard.unregister(self)
        self.closed = True
        self.shard.counters.server_disconnect(disconnect.code)
        self.flush_before_close()
        transport.write(self.farewell(disconnect))
        # Keep reading until the peer's close frame arrives (data_received closes then), or give up.
        self.shard.loop.call_later(CLOSE_WAIT, self._close_transport)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class WsConnection(SessionHosting, _WebSocketBase):
    """Bidirectional WebSocket: Centrifugo's client protocol in JSON or Protobuf."""

    __slots__ = ("_opcode", "session")

    def __init__(self, shard: ConnectionHost, state: ConnectionState, codec: Codec, initial: bytes) -> None:
        super().__init__(shard, state, "ws-protobuf" if codec.binary else "ws-json", initial)
        self.session = ClientSession(state, codec, self)
        self._opcode = OP_BINARY if codec.binary else OP_TEXT

    def on_message(self, payload: bytes, now: float) -> None:
        self.receive_commands(payload, now)

    def after_input(self) -> None:
        self._write_replies()

    def _write_replies(self) -> None:
        replies = self.session.data_to_send()
        if replies:
            self.enqueue(encode_frame(self._opcode, replies))
        self._end_if_the_session_ended()

    def send_push(self, body: dict[str, Any]) -> None:
        if not self.closed:
            self.enqueue(encode_frame(self._opcode, self.session.codec.encode_push(body)))


class _UniWebSocketFraming:
    """uni_websocket: each push is one text frame; the 101 was written by the router."""

    __slots__ = ()
    name = "uni_websocket"

    def head(self) -> bytes:
        return b""

    def prelude(self) -> bytes:
        return b""

    def frame(self, message: bytes) -> bytes:
        return encode_frame(OP_TEXT, message)

    def end(self) -> bytes:
        return b""


UNI_WEBSOCKET = _UniWebSocketFraming()


class UniWsConnection(_WebSocketBase):
    """Unidirectional WebSocket: the first text message is the ConnectRequest; later ones are ignored."""

    __slots__ = ("session",)

    def __init__(self, shard: ConnectionHost, state: ConnectionState, initial: bytes) -> None:
        super().__init__(shard, state, "uni_websocket", initial)
        self.session = UniSession(state, UNI_WEBSOCKET)  # type: ignore[arg-type]

    def on_message(self, payload: bytes, now: float) -> None:
        if self.state.user or self.shard.hub.by_client.get(self.state.client) is self:
            return  # already connected: a unidirectional client has nothing more to say
        shard = self.shard
        ended = self.session.start_from_body(payload, shard.verifier, shard.rules, shard.cfg, now)
        if ended is None:
            ended = shard.admit(self, lambda: recover_then_flush(self, self.session))
        if ended is not None:
            self.close_with(ended)

    def ping(self, now: float) -> None:
        self.session.ping()
        self.enqueue(self.session.data_to_send() + encode_frame(OP_PING, b""))

    def farewell(self, disconnect: Disconnect) -> bytes:
        self.session.disconnect(disconnect)
        return self.session.data_to_send() + self.ws.send_close(disconnect.code, disconnect.reason)
