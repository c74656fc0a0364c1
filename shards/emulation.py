"""Bidirectional emulation (http_stream, SSE) adopted by a shard: a stream down, ``/emulation`` up.

The router handed over the socket of ``POST /connection/http_stream`` (or ``GET``/``POST
/connection/sse``) with the first frame (the connect command) it read. The shard writes the response
head at once, then every reply and push of the session on the stream: newline-delimited JSON or
varint-delimited Protobuf in HTTP/1.1 chunks (http_stream), or ``data:`` events (SSE, JSON only). The
client's later commands, pongs included, arrive as ``POST /emulation`` requests that the router routes
here by the session id, which starts with this shard's index (:func:`broker.emulation.session_id`).
A disconnect is a disconnect push, then the end of the stream.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broker.errors import Disconnect
from broker.protocol.client import ClientSession
from broker.protocol.codec import Codec
from broker.protocol.state import ConnectionState
from broker.protocol.uni import HTTP_STREAM, SSE, HttpStreamFraming
from shards.connection import ConnectionHost
from shards.session_host import SessionHosting

log = logging.getLogger("switchboard.shard")


class _ProtobufStream(HttpStreamFraming):
    """http_stream with Protobuf: varint-delimited replies as they are, in chunks."""

    __slots__ = ()
    name = "http_stream"
    content_type = b"application/octet-stream"

    def frame(self, message: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(message), message)


PROTOBUF_STREAM = _ProtobufStream()


def framing_for(transport: str, binary: bool) -> HttpStreamFraming:
    if transport == "sse":
        return SSE
    return PROTOBUF_STREAM if binary else HTTP_STREAM


def push_kind(transport: str, binary: bool) -> str:
    """The fan-out kind (:data:`shards.encoding.ENCODERS`) of an emulation connection."""
    return f"{transport}-{'protobuf' if binary else 'json'}"


class EmulationConnection(SessionHosting):
    __slots__ = ("_binary", "_framing", "_initial", "session")

    def __init__(self, shard: ConnectionHost, state: ConnectionState, codec: Codec, initial: bytes) -> None:
        super().__init__(shard, state, push_kind(state.transport, codec.binary))
        self.session = ClientSession(state, codec, self)
        self._binary = codec.binary
        self._framing = framing_for(state.transport, codec.binary)
        self._initial: bytes | None = initial

    def started(self) -> None:
        initial, self._initial = self._initial or b"", None
        self.shard.emulation_started(self)
        self.enqueue(self._framing.head() + self._framing.prelude())
        self.receive_frame(initial)

    def receive_frame(self, data: bytes) -> None:
        """A frame from the client: the first one from the stream's request, later ones via /emulation."""
        if self.closed:
            return
        self.shard.counters.received_from_client(self.state.transport, len(data))
        self.receive_commands(data, time.time())
        self._write_replies()

    def data_received(self, data: bytes) -> None:
        del data  # the client says everything through /emulation; its stream carries nothing more

    def _write_replies(self) -> None:
        replies = self.session.data_to_send()
        if replies:
            self.enqueue(self._frames(replies))
        self._end_if_the_session_ended()

    def _frames(self, encoded: bytes) -> bytes:
        if self._binary:
            return self._framing.frame(encoded)
        # JSON replies are newline-separated: one line (one event) each.
        return b"".join(self._framing.frame(line) for line in encoded.split(b"\n") if line)

    def send_push(self, body: dict[str, Any]) -> None:
        if not self.closed:
            self.enqueue(self._frames(self.session.codec.encode_push(body)))

    def farewell(self, disconnect: Disconnect) -> bytes:
        push = self.session.codec.encode_push(
            {"disconnect": {"code": disconnect.code, "reason": disconnect.reason}}
        )
        return self._frames(push) + self._framing.end()
