"""The per-connection timers of a shard: pings and pong checks, connection and subscription expiry.

Each tick (once a second, from the shard's ticker) does the work of the seconds since the last one:
the ping wheel (:mod:`shards.ticker`) says whom to ping and whose pong to check, the deadline heaps
(:mod:`shards.deadlines`) say which connections and subscriptions expired. A key leaves as soon as its
connection or subscription ends, so closed connections hold nothing until their expiry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from broker import errors
from broker.config import Config
from broker.protocol.state import SERVER_SIDE_SOURCES
from shards.connection import ClientConnection
from shards.deadlines import Deadlines
from shards.hub import Hub
from shards.ticker import PingWheel

log = logging.getLogger("switchboard.shard")
# Seconds between two ticks (one a second) past which the loop counts as having stalled.
STALLED = 2.5


class TimersHost(Protocol):
    """What expiry needs of its shard: the live connections and a way to end one subscription."""

    @property
    def hub(self) -> Hub: ...

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None: ...


class Refresher(Protocol):
    """Prolongs what a proxy, not the client, refreshes (see :mod:`shards.proxy_refresh`)."""

    def by_proxy(self, conn: ClientConnection, channel: str) -> bool:
        """Whether the sub_refresh proxy prolongs this subscription."""

    def refresh(self, conn: ClientConnection) -> None: ...

    def sub_refresh(self, conn: ClientConnection, channel: str) -> None: ...


class ConnectionTimers:
    def __init__(self, cfg: Config, host: TimersHost, now: float) -> None:
        self.cfg = cfg
        self.host = host
        self.pings: PingWheel[ClientConnection] = PingWheel(cfg.ping_interval, cfg.pong_timeout, now)
        # Expiring connections (client id) and subscriptions ((client id, channel)).
        self.expiry: Deadlines[str] = Deadlines()
        self.sub_expiry: Deadlines[tuple[str, str]] = Deadlines()
        # The same, for those the refresh / sub_refresh proxy prolongs: due at the expiry itself.
        self.refresh_due: Deadlines[str] = Deadlines()
        self.sub_refresh_due: Deadlines[tuple[str, str]] = Deadlines()
        self.refresher: Refresher | None = None
        self._last_tick = 0.0
        self._pong_checks_from = 0.0

    def track(self, conn: ClientConnection) -> None:
        """A connection entered the hub: ping it, and expire it if its credentials do."""
        state = conn.state
        self.pings.add(conn, state.connected_at)
        if state.expire_at:
            self.expiry_changed(conn)

    def untrack(self, conn: ClientConnection) -> None:
        """A connection left the hub: forget every timer it had."""
        state = conn.state
        self.pings.discard(conn, state.connected_at)
        self.expiry.discard(state.client)
        self.refresh_due.discard(state.client)
        for channel in state.sub_expires or ():
            self.sub_expiry.discard((state.client, channel))
            self.sub_refresh_due.discard((state.client, channel))

    def expiry_changed(self, conn: ClientConnection) -> None:
        state = conn.state
        by_proxy = state.refresh_by_proxy and self.refresher is not None
        (self.refresh_due if by_proxy else self.expiry).set(state.client, state.expire_at)
        (self.expiry if by_proxy else self.refresh_due).discard(state.client)

    def sub_expiry_changed(self, conn: ClientConnection, channel: str) -> None:
        expires = conn.state.sub_expires
        key = (conn.state.client, channel)
        if not expires or channel not in expires:
            self.unsubscribed(conn, channel)
            return
        by_proxy = self.refresher is not None and self.refresher.by_proxy(conn, channel)
        (self.sub_refresh_due if by_proxy else self.sub_expiry).set(key, expires[channel])
        (self.sub_expiry if by_proxy else self.sub_refresh_due).discard(key)

    def unsubscribed(self, conn: ClientConnection, channel: str) -> None:
        key = (conn.state.client, channel)
        self.sub_expiry.discard(key)
        self.sub_refresh_due.discard(key)

    def tick(self, now: float) -> None:
        if self._last_tick and now - self._last_tick > STALLED:
            # The loop was stalled (one long step: a storm on a busy machine). Pongs that arrived
            # meanwhile are still unread in the sockets: no client is blamed until the loop has kept
            # time for a whole pong timeout. Connections still silent then are checked next round.
            self._pong_checks_from = now + self.cfg.pong_timeout + 1
        self._last_tick = now
        to_ping, to_check = self.pings.advance(now)
        for conn in to_ping:
            conn.ping(now)
        if now >= self._pong_checks_from:
            for conn in to_check:
                conn.check_pong(now)
        self._expire_connections(now)
        self._expire_subscriptions(now)
        if self.refresher is not None:
            self._refresh(self.refresher, now)

    def _refresh(self, refresher: Refresher, now: float) -> None:
        """Ask the proxies about what is due; each answer sets the next deadline (or ends it)."""
        by_client = self.host.hub.by_client
        for client, expire_at in self.refresh_due.pop_due(now):
            conn = by_client.get(client)
            if isinstance(conn, ClientConnection) and conn.state.expire_at == expire_at:
                refresher.refresh(conn)
        for (client, channel), expire_at in self.sub_refresh_due.pop_due(now):
            conn = by_client.get(client)
            if not isinstance(conn, ClientConnection):
                continue
            expires = conn.state.sub_expires
            if expires and expires.get(channel) == expire_at:
                refresher.sub_refresh(conn, channel)

    def _expire_connections(self, now: float) -> None:
        for client, expire_at in self.expiry.pop_due(now - self.cfg.client_expired_close_delay):
            found = self.host.hub.by_client.get(client)
            if isinstance(found, ClientConnection) and found.state.expire_at == expire_at:
                found.close_with(errors.CONNECTION_EXPIRED)

    def _expire_subscriptions(self, now: float) -> None:
        for (client, channel), expire_at in self.sub_expiry.pop_due(
            now - self.cfg.client_expired_sub_close_delay
        ):
            conn = self.host.hub.by_client.get(client)
            if not isinstance(conn, ClientConnection):
                continue
            expires = conn.state.sub_expires
            if not expires or expires.get(channel) != expire_at:
                continue  # refreshed or gone since
            source = conn.state.channels.get(channel)
            if source in SERVER_SIDE_SOURCES:
                conn.close_with(errors.SUBSCRIPTION_EXPIRED)
                continue
            self.host.server_unsubscribe(conn, channel, 2501, "subscription expired")


async def every_second(tick: Callable[[float], None], late: Callable[[float], None] | None = None) -> None:
    """Call ``tick(now)`` at each whole second of the clock, until cancelled.

    It wakes at the next whole second of the clock as it is now: a tick that ran late is not followed by
    a burst of ticks for the seconds it missed (the wheel catches them up at once). ``late(seconds)``
    is told how long after its second each tick woke: the event loop's lag.
    """
    while True:
        due = math.floor(time.time()) + 1
        await asyncio.sleep(max(0.0, due - time.time()))
        if late is not None:
            late(max(0.0, time.time() - due))
        try:
            tick(time.time())
        except Exception:
            log.exception("shard tick failed")
