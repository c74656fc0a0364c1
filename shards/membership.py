"""Who is on a shard and what they subscribe to: connections entering and leaving the hub.

Every change to a connection's place in the hub happens here, with what goes with it: its timers
(:mod:`shards.timers`), its join/leave announcements (:mod:`shards.fanout`), the data plane's interest in
its channels (the SUB socket subscribes a channel on its first local subscriber), and the shared-memory
channel counts the router reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from broker import errors
from broker.access.rules import AccessRules
from broker.config import Config
from broker.errors import Disconnect
from broker.ipc.shm_index import CountIndex
from broker.metrics.counters import ShardCounters, client_key
from shards.connection import ClientConnection
from shards.hub import Hub
from shards.timers import ConnectionTimers

log = logging.getLogger("switchboard.shard")


class DataPlane(Protocol):
    """The SUB socket's channel interest (``broker.ipc.pubsub.Subscriber``)."""

    def subscribe(self, channel: str) -> None: ...

    def release(self, channel: str) -> None: ...

    def when_ready(self, channel: str, callback: Callable[[], None]) -> None: ...


class Announcing(Protocol):
    """Join/leave announcements, and what fan-out keeps per channel (``shards.fanout.FanOut``)."""

    def presence_event(self, conn: ClientConnection, channel: str, kind: str) -> None: ...

    def channel_gone(self, channel: str) -> None: ...


class Roster(Protocol):
    """Who is here, recorded where every node sees it (``shards.roster.RedisRoster``, Redis engine)."""

    def admit(self, conn: ClientConnection, decided: Callable[[bool], None]) -> None: ...

    def left(self, conn: ClientConnection) -> None: ...

    def subscribed(self, conn: ClientConnection, channel: str) -> None: ...

    def unsubscribed(self, conn: ClientConnection, channel: str) -> None: ...


class InfoChanges(Protocol):
    """Who is told that what ``connections`` shows of a user changed (``shards.user_index``)."""

    def changed(self, user: str) -> None: ...


class Membership:
    """Owns the hub and the connections' timers; ``fanout`` and ``data_plane`` are set once built."""

    def __init__(self, cfg: Config, index: int, counts: CountIndex | None, now: float) -> None:
        self.cfg = cfg
        self.index = index
        self.counts = counts
        if counts is not None:
            counts.reset_column(index)  # nothing left from a previous life of this shard
        self._counts_full = False
        self.data_plane: DataPlane | None = None
        self.fanout: Announcing | None = None
        self.roster: Roster | None = None
        self.user_index: InfoChanges | None = None
        self.hub = Hub(
            on_first_subscriber=self._channel_added,
            on_last_subscriber=self._channel_removed,
            on_count=self._channel_count if counts is not None else None,
        )
        self.timers = ConnectionTimers(cfg, self, now)
        self.access = AccessRules()
        self.counters = ShardCounters()
        # Told when a user's last connection here closes (user status: when they were last online).
        self.on_user_gone: Callable[[str], None] | None = None

    def admit(self, conn: ClientConnection, ready: Callable[[], None] | None = None) -> Disconnect | None:
        """Enter a connection that passed connect into every index; refuse it over the user's limit.

        ``ready`` is called once the data plane delivers every channel the connection starts with (its
        server-side subscriptions), so that the connect reply never precedes a lost publication.
        """
        state = conn.state
        # Blocked users, revoked and invalidated tokens (the session management API) stop here, after
        # the token was read or the connect proxy answered, whichever transport the client came by.
        refused = self.access.refuses(state.user, state.token_uid, state.token_issued_at, time.time())
        if refused is not None:
            return refused
        limit = self.cfg.client_user_connection_limit
        # All of a user's connections live on this shard, so the count here is the user's count.
        if limit and state.user and len(self.hub.user_connections(state.user)) >= limit:
            return errors.CONNECTION_LIMIT
        roster = self.roster
        if roster is None:
            return self._enter(conn, ready)

        # Counted in over every node first; until then the connection is in no index, so nothing
        # (a publication, its own join) reaches it before its connect reply.
        def decided(allowed: bool) -> None:
            if not allowed:
                conn.close_with(errors.CONNECTION_LIMIT)
            elif not conn.closed:
                ended = self._enter(conn, ready)
                if ended is not None:
                    conn.close_with(ended)

        roster.admit(conn, decided)
        return None

    def _enter(self, conn: ClientConnection, ready: Callable[[], None] | None) -> Disconnect | None:
        state = conn.state
        try:
            self.hub.add(conn)
        except ValueError:
            log.error("duplicate client id %s", state.client)
            return errors.DISCONNECT_INTERNAL
        self.timers.track(conn)
        self.counters.connected(client_key(state.transport, state.app_name, state.app_version))
        self.info_changed(conn)
        log.debug("client %s connected: user=%r transport=%s", state.client, state.user, state.transport)
        channels = list(state.channels)
        if not channels:
            if ready is not None:
                ready()
            return None
        waiting = [len(channels)]

        def one_ready() -> None:
            waiting[0] -= 1
            if waiting[0] == 0 and ready is not None:
                ready()

        if self.roster is not None:
            for channel in channels:
                self.roster.subscribed(conn, channel)
        for channel in channels:
            self._when_ready(conn, channel, one_ready)
        return None

    def _when_ready(self, conn: ClientConnection, channel: str, ready: Callable[[], None] | None) -> None:
        """``ready()`` (after the join announcement) once publications of ``channel`` reach ``conn``."""

        def now_ready() -> None:
            if conn.state.client in self.hub.by_client and channel in conn.state.channels:
                self._announce(conn, channel, "join")
            if ready is not None:
                ready()

        if self.data_plane is None:
            now_ready()
        else:
            self.data_plane.when_ready(channel, now_ready)

    def unregister(self, conn: ClientConnection) -> None:
        if self.hub.remove(conn):
            self.timers.untrack(conn)
            state = conn.state
            self.counters.left(client_key(state.transport, state.app_name, state.app_version))
            self.info_changed(conn)
            log.debug("client %s gone", conn.state.client)
            for channel in conn.state.channels:
                self._announce(conn, channel, "leave")
                if self.roster is not None:
                    self.roster.unsubscribed(conn, channel)
            if self.roster is not None:
                self.roster.left(conn)
            user = conn.state.user
            if user and self.on_user_gone is not None and not self.hub.user_connections(user):
                self.on_user_gone(user)

    def subscribe(
        self, conn: ClientConnection, channel: str, source: int, ready: Callable[[], None] | None = None
    ) -> None:
        """Subscribe a connection; ``ready`` (and the join announcement) once publications will reach it."""
        self.hub.subscribe(conn, channel, source)
        self.info_changed(conn)
        if self.roster is not None:
            self.roster.subscribed(conn, channel)
        self._when_ready(conn, channel, ready)

    def unsubscribe(self, conn: ClientConnection, channel: str) -> None:
        if channel in conn.state.channels:
            self.hub.unsubscribe(conn, channel)
            self.info_changed(conn)
            self.timers.unsubscribed(conn, channel)
            self._announce(conn, channel, "leave")
            if self.roster is not None:
                self.roster.unsubscribed(conn, channel)

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None:
        """End one subscription from the server's side and tell the client with ``code``."""
        if channel not in conn.state.channels:
            return
        self.unsubscribe(conn, channel)
        self.counters.server_unsubscribe(code)
        session = getattr(conn, "session", None)
        if session is not None and hasattr(session, "forget_channel"):
            session.forget_channel(channel)
        if conn.state.positions is not None:
            conn.state.positions.pop(channel, None)
        if conn.state.position_boots is not None:
            conn.state.position_boots.pop(channel, None)
        conn.send_push({"channel": channel, "unsubscribe": {"code": code, "reason": reason}})

    def expiry_changed(self, conn: ClientConnection) -> None:
        if conn.state.client in self.hub.by_client:
            self.timers.expiry_changed(conn)
            self.info_changed(conn)  # a refresh brings a new token (its jti and iat are shown)

    def sub_expiry_changed(self, conn: ClientConnection, channel: str) -> None:
        if conn.state.client in self.hub.by_client:
            self.timers.sub_expiry_changed(conn, channel)
            self.info_changed(conn)
        else:
            self.timers.unsubscribed(conn, channel)

    def info_changed(self, conn: ClientConnection) -> None:
        """What the connections API shows of ``conn`` changed (its ping latency, say)."""
        if self.user_index is not None:
            self.user_index.changed(conn.state.user)

    def _announce(self, conn: ClientConnection, channel: str, kind: str) -> None:
        if self.fanout is not None:
            self.fanout.presence_event(conn, channel, kind)

    # -- the data plane and the router's counts follow the hub ----------------------------------------

    def _channel_added(self, channel: str) -> None:
        if self.data_plane is not None:
            self.data_plane.subscribe(channel)

    def _channel_removed(self, channel: str) -> None:
        if self.data_plane is not None:
            self.data_plane.release(channel)
        if self.fanout is not None:
            self.fanout.channel_gone(channel)

    def _channel_count(self, channel: str, count: int) -> None:
        assert self.counts is not None
        try:
            stored = self.counts.set(channel, self.index, count)
        except ValueError:
            stored = False  # a channel name too long for the table: the router asks the shards
        if not stored and not self._counts_full:
            self._counts_full = True
            log.warning("channel counts table is full; the router falls back to asking every shard")
