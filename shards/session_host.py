"""The host side of a bidirectional session: a connection that carries a :class:`ClientSession` is also
the session's host, reaching the shard (indexes, publications, timers) without the shard keeping a
session → connection map. Shared by the WebSocket and the emulation (http_stream / SSE) connections;
each writes the session's replies its own way (``_write_replies``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker import errors
from broker.errors import ClientError, Disconnect
from broker.protocol.client import ClientSession
from broker.proxy.table import ProxySpec, ProxyTable
from broker.publication import Publication
from shards.connection import ClientConnection

if TYPE_CHECKING:
    from broker.auth import TokenVerifier
    from broker.channels import ChannelRules
    from broker.config import Config
    from broker.protocol.client import Answered, Done

log = logging.getLogger("switchboard.shard")


class SessionHosting(ClientConnection):
    """A :class:`shards.connection.ClientConnection` whose ``session`` it hosts (combined with a
    transport's connection class)."""

    __slots__ = ()

    session: ClientSession

    def _write_replies(self) -> None:
        raise NotImplementedError

    def receive_commands(self, data: bytes, now: float) -> None:
        """The client's commands to the session; a pong that changed the ping latency is shown by the
        connections API, so it is reported as a change."""
        state = self.state
        latency = state.ping_pong_latency_ms
        self.session.receive(data, now)
        if state.ping_pong_latency_ms != latency:
            self.shard.info_changed(self)

    def ping(self, now: float) -> None:
        self.session.ping(now)
        self._write_replies()

    def check_pong(self, now: float) -> None:
        if self.session.ping_due(now, self.shard.cfg.pong_timeout):
            self.close_with(errors.NO_PONG)

    def _end_if_the_session_ended(self) -> None:
        """The session decided to disconnect (a bad command, an expired token …): tell the client."""
        disconnect = self.session.disconnect
        if disconnect is not None and not self.closed:
            log.info(
                "client %s disconnected: code=%d reason=%s",
                self.state.client,
                disconnect.code,
                disconnect.reason,
            )
            self.close_with(disconnect)

    @property
    def cfg(self) -> Config:
        return self.shard.cfg

    @property
    def verifier(self) -> TokenVerifier:
        return self.shard.verifier

    @property
    def rules(self) -> ChannelRules:
        return self.shard.rules

    def admit(self, session: ClientSession, ready: Callable[[], None]) -> Disconnect | None:
        return self.shard.admit(self, self._flushing(ready))

    def subscribe(self, session: ClientSession, channel: str, source: int, ready: Callable[[], None]) -> None:
        self.shard.subscribe(self, channel, source, self._flushing(ready))

    def _flushing(self, callback: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            callback()
            self._write_replies()

        return run

    def unsubscribe(self, session: ClientSession, channel: str) -> None:
        self.shard.unsubscribe(self, channel)

    def publish(self, publication: Publication, done: Done, skip_history: bool = False) -> None:
        self.shard.publish(publication, self._replying(done), skip_history)

    def update_user_status(self, user: str) -> None:
        self.shard.update_user_status(user)

    def access_refuses(
        self, user: str, token_uid: str, token_issued_at: int, now: float
    ) -> Disconnect | None:
        return self.shard.access.refuses(user, token_uid, token_issued_at, now)

    def subscription_token_refused(
        self, user: str, channel: str, token_uid: str, token_issued_at: int, now: float
    ) -> bool:
        return self.shard.access.refuses_subscription_token(user, channel, token_uid, token_issued_at, now)

    def expiry_changed(self, session: ClientSession) -> None:
        self.shard.expiry_changed(self)

    def cluster_query(self, method: str, params: dict[str, Any], merge: Any, done: Done) -> None:
        self.shard.cluster_query(method, params, merge, self._replying(done))

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Done) -> None:
        self.shard.writer_query(channel, method, params, self._replying(done))

    def _replying(self, done: Done) -> Done:
        """Wrap a completion so that the reply it queues is written at once."""

        def finished(err: ClientError | None, result: dict[str, Any] | None) -> None:
            done(err, result)
            self._write_replies()

        return finished

    @property
    def proxies(self) -> ProxyTable:
        return self.shard.proxies

    def proxy(self, spec: ProxySpec, body: dict[str, Any], done: Answered) -> None:
        def answered(answer: Any, now: float) -> None:
            if self.closed:
                return
            done(answer, now)
            self._write_replies()

        self.shard.proxy(self, spec, body, answered)

    def command_handled(self, method: str, seconds: float) -> None:
        self.shard.counters.command(method, seconds)

    def reply_failed(self, method: str, code: int) -> None:
        self.shard.counters.reply_error(method, code)

    def sub_expiry_changed(self, session: ClientSession, channel: str) -> None:
        self.shard.sub_expiry_changed(self, channel)
