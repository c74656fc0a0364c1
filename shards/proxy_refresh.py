"""The refresh and sub_refresh proxies: the backend, not the client, prolongs what it granted.

A connection the connect proxy let in with an ``expire_at`` is, when a refresh proxy is configured,
prolonged by that proxy: at its expiry the shard asks the backend, which answers with a new
``expire_at`` (and maybe new ``info`` / ``meta``), ``expired: true`` (disconnect 3005) or a
``disconnect``. A subscription the subscribe proxy granted with an ``expire_at``, in a namespace with
a sub_refresh proxy, is treated the same way; ``expired`` ends it with unsubscribe 2501, which makes
the SDK subscribe again (and so ask the subscribe proxy). The client is never told to refresh these.

A failed call (timeout, refused, non-200, garbage) does not end anything: the expiry moves
``RETRY_AFTER`` seconds on and the backend is asked again then, as Centrifugo does, so a backend's
bad minute does not disconnect every client it granted. ``expire_at`` 0 in an answer means the
connection (or subscription) no longer expires, as in the connect proxy's answer.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from broker import errors
from broker.channels import ChannelRules
from broker.protocol.state import SOURCE_SUBSCRIBE_PROXY
from broker.proxy.events import RefreshGrant, Refusal, parse_refresh, refresh_request
from broker.proxy.fields import MalformedAnswer
from broker.proxy.table import ProxyTable
from shards.connection import ClientConnection
from shards.proxies import ProxyCalls

log = logging.getLogger("switchboard.proxy")

RETRY_AFTER = 60.0


class RefreshHost(Protocol):
    def expiry_changed(self, conn: ClientConnection) -> None: ...

    def sub_expiry_changed(self, conn: ClientConnection, channel: str) -> None: ...

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None: ...


class ProxyRefresher:
    def __init__(self, rules: ChannelRules, table: ProxyTable, calls: ProxyCalls, host: RefreshHost) -> None:
        self.rules = rules
        self.table = table
        self.calls = calls
        self.host = host

    def by_proxy(self, conn: ClientConnection, channel: str) -> bool:
        if conn.state.channels.get(channel) != SOURCE_SUBSCRIBE_PROXY:
            return False
        try:
            options = self.rules.options_for(channel)
        except errors.ClientError:
            return False
        return self.rules.proxy_for("sub_refresh", options) is not None

    def refresh(self, conn: ClientConnection) -> None:
        spec = self.table.refresh
        if spec is None:
            return
        state = conn.state

        def answered(answer: Any, now: float) -> None:
            if conn.closed:
                return
            outcome = _grant("refresh", conn, answer)
            if conn.closed:
                return
            if outcome is None:
                state.expire_at = now + RETRY_AFTER
            elif outcome.expired:
                conn.close_with(errors.CONNECTION_EXPIRED)
                return
            else:
                if outcome.info is not None:
                    state.info = outcome.info
                if outcome.meta is not None:
                    state.meta = outcome.meta
                state.expire_at = float(outcome.expire_at)
            self.host.expiry_changed(conn)

        self.calls.call(spec, refresh_request(state, spec), state.proxy_headers, answered)

    def sub_refresh(self, conn: ClientConnection, channel: str) -> None:
        spec = self.rules.proxy_for("sub_refresh", self.rules.options_for(channel))
        if spec is None:
            return
        state = conn.state

        def answered(answer: Any, now: float) -> None:
            if conn.closed or channel not in state.channels or state.sub_expires is None:
                return
            outcome = _grant("sub_refresh", conn, answer)
            if conn.closed:
                return
            if outcome is None:
                state.sub_expires[channel] = now + RETRY_AFTER
            elif outcome.expired:
                self.host.server_unsubscribe(conn, channel, 2501, "subscription expired")
                return
            else:
                if outcome.info is not None:
                    if state.chan_info is None:
                        state.chan_info = {}
                    state.chan_info[channel] = outcome.info
                if outcome.expire_at:
                    state.sub_expires[channel] = float(outcome.expire_at)
                else:
                    del state.sub_expires[channel]
            self.host.sub_expiry_changed(conn, channel)

        self.calls.call(spec, refresh_request(state, spec, channel), state.proxy_headers, answered)


def _grant(kind: str, conn: ClientConnection, answer: Any) -> RefreshGrant | None:
    """What an answer grants; None: ask again later (a failed call, a malformed answer, or an error,
    which has no command to answer). A ``disconnect`` answer closes the connection."""
    if answer is None:
        return None  # the call failed; logged where it was made
    try:
        outcome = parse_refresh(answer)
    except (MalformedAnswer, ValueError, TypeError) as exc:
        log.error("%s proxy: malformed answer: %s", kind, exc)
        return None
    if isinstance(outcome, Refusal):
        if outcome.disconnect is not None:
            conn.close_with(outcome.disconnect)
        return None
    return outcome
