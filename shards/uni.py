"""The asyncio adapter of a unidirectional HTTP stream adopted by a shard.

All protocol decisions live in :class:`broker.protocol.uni.UniSession`; this class only moves its bytes
to the socket and reports the stream's end to the shard, which removes the connection from every index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from broker import errors
from broker.errors import Disconnect
from broker.protocol.state import ConnectionState
from broker.protocol.uni import HttpStreamFraming, UniSession

if TYPE_CHECKING:
    from shards.main import Shard

log = logging.getLogger("switchboard.shard")


class UniConnection(asyncio.Protocol):
    __slots__ = ("_request", "session", "shard", "state", "transport")

    def __init__(
        self, shard: Shard, state: ConnectionState, framing: HttpStreamFraming, request: bytes
    ) -> None:
        self.shard = shard
        self.state = state
        self.session = UniSession(state, framing)
        self._request: bytes | None = request
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.shard.attach(self)
        body, self._request = self._request or b"", None
        shard = self.shard
        ended = self.session.start_from_body(body, shard.verifier, shard.cfg, time.time())
        if ended is not None:
            log.info(
                "connection rejected: client=%s transport=%s code=%d reason=%s",
                self.state.client,
                self.state.transport,
                ended.code,
                ended.reason,
            )
            self._flush()
            transport.close()
            return
        if not shard.register(self):
            return
        self._flush()

    def data_received(self, data: bytes) -> None:
        # Unidirectional clients only read; anything they send after the request is ignored.
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.shard.detach(self)
        self.transport = None

    def _flush(self) -> None:
        data = self.session.data_to_send()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)
            if transport.get_write_buffer_size() > self.shard.cfg.client_queue_max_size:
                self.close_with(errors.SLOW)

    def send(self, message: bytes) -> None:
        self.session.push_encoded(message)
        self._flush()

    def ping(self) -> None:
        self.session.ping()
        self._flush()

    def close_with(self, disconnect: Disconnect) -> None:
        """Tell the client why, end the stream and forget the connection at once."""
        self.shard.unregister(self)
        if self.session.closed:
            return
        self.session.disconnect(disconnect)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = self.session.data_to_send()
            if disconnect.code == errors.SLOW.code:
                # The client is not reading: queuing more would never drain.
                transport.abort()
                return
            if data:
                transport.write(data)
            transport.close()

    def abort(self) -> None:
        self.shard.unregister(self)
        if self.transport is not None:
            self.transport.abort()
