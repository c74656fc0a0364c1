"""Unidirectional HTTP streams (uni_http_stream, uni_sse) adopted by a shard.

All protocol decisions live in :class:`broker.protocol.uni.UniSession`; this adapter moves its bytes to
the socket and reports the stream's end to the shard, which removes the connection from every index.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from broker.errors import ClientError, Disconnect
from broker.protocol.state import ConnectionState
from broker.protocol.uni import HttpStreamFraming, UniSession
from shards.connection import ClientConnection, ConnectionHost

log = logging.getLogger("switchboard.shard")


class UniConnection(ClientConnection):
    __slots__ = ("_request", "session")

    def __init__(
        self, shard: ConnectionHost, state: ConnectionState, framing: HttpStreamFraming, request: bytes
    ) -> None:
        super().__init__(shard, state, framing.name)
        self.session = UniSession(state, framing)
        self._request: bytes | None = request

    def started(self) -> None:
        body, self._request = self._request or b"", None
        shard = self.shard
        ended = self.session.start_from_body(body, shard.verifier, shard.rules, shard.cfg, time.time())
        if ended is None:
            # The connect push leaves once the starting channels deliver (see Shard.admit) and the
            # recoveries the client asked for are answered.
            ended = shard.admit(self, lambda: recover_then_flush(self, self.session))
        if ended is not None:
            log.info(
                "connection rejected: client=%s transport=%s code=%d reason=%s",
                self.state.client,
                self.state.transport,
                ended.code,
                ended.reason,
            )
            self.session.disconnect(ended)
            self.closed = True
            if self.transport is not None:
                self.transport.write(self.session.data_to_send())
                self.transport.close()
            return

    def data_received(self, data: bytes) -> None:
        # Unidirectional clients only read; anything they send after the request is ignored.
        pass

    def ping(self, now: float) -> None:
        self.session.ping()
        self.enqueue(self.session.data_to_send())

    def farewell(self, disconnect: Disconnect) -> bytes:
        self.session.disconnect(disconnect)
        return self.session.data_to_send()


def recover_then_flush(conn: ClientConnection, session: UniSession) -> None:
    """Write a unidirectional session's connect push, after the recoveries its ConnectRequest asked for."""
    requests = session.recovery_requests
    if not requests:
        conn.enqueue(session.data_to_send())
        return
    limit = conn.shard.cfg.client_recovery_max_publication_limit

    def answer_for(channel: str) -> Any:
        def answered(err: ClientError | None, found: dict[str, Any] | None) -> None:
            if conn.closed:
                return
            if err is not None:
                log.warning(
                    "recovery of %s for client %s failed: %s", channel, conn.state.client, err.message
                )
            if session.recovered(channel, found if err is None else None):
                conn.enqueue(session.data_to_send())

        return answered

    for channel, (offset, epoch) in requests.items():
        params = {"channel": channel, "since": {"offset": offset, "epoch": epoch}, "limit": limit}
        conn.shard.writer_query(channel, "recover", params, answer_for(channel))
