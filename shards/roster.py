"""What a shard records in Redis about its clients, so that every node sees them (the Redis engine).

* **Users** (:class:`broker.engine.redis_users.RedisUsers`): each connection of a user is counted in
  under this shard's holder id ``<node id>/<boot id>`` before the connect reply is sent — refused with
  3504 when the user holds ``client_user_connection_limit`` connections over all nodes — and counted out
  when it ends. That is also the user → nodes index a by-user ``connections`` query reads.
* **Presence** (:class:`broker.engine.redis_presence.RedisPresence`): a subscriber of a presence channel
  gets an entry on subscribe, loses it on unsubscribe.

Both are refreshed from the one-second ticker well within their expiry, so what a killed shard or node
held stops counting on its own. Redis failing never fails a client: a connection admitted while Redis
does not answer is admitted uncounted (one log line), and presence catches up at the next refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from broker.channels import ChannelRules
from broker.engine.redis_presence import RedisPresence
from broker.engine.redis_users import RedisUsers
from broker.errors import ClientError
from broker.publication import ClientInfo
from shards.connection import ClientConnection
from shards.hub import Hub

log = logging.getLogger("switchboard.shard")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class RedisRoster:
    def __init__(
        self,
        users: RedisUsers,
        presence: RedisPresence,
        rules: ChannelRules,
        hub: Hub,
        *,
        seat: str,
        holder: str,
        limit: int,
        users_ttl: float,
        presence_ttl: float,
        spawn: Spawn,
    ) -> None:
        self.users = users
        self.presence = presence
        self.rules = rules
        self.hub = hub
        self.seat = seat
        self.holder = holder
        self.limit = limit
        self.users_ttl = users_ttl
        self.presence_ttl = presence_ttl
        self.spawn = spawn
        # user → clients of this shard counted in Redis (only those are counted out).
        self.counted: dict[str, set[str]] = {}
        self._next_users_refresh = time.time() + users_ttl / 3
        self._next_presence_refresh = time.time() + presence_ttl / 3
        self._refreshing = False
        # Set once the previous life of this seat has been counted out (admissions wait for it).
        self._seated = asyncio.Event()
        self.seat_timeout = 5.0

    async def take_seat(self) -> None:
        """At start: take back what this shard's previous life on this node counted (crash, restart),
        so that its users reconnecting now are not refused over counts nobody holds any more."""
        try:
            async with asyncio.timeout(self.seat_timeout):
                gone = await self.users.take_seat(self.seat, self.holder, ttl=self.users_ttl)
            if gone:
                log.info("counted out %d users a previous life of this shard held", gone)
        except Exception as exc:
            log.error("could not take back the previous life's user counts (%r); they expire", exc)
        finally:
            self._seated.set()

    # -- users --------------------------------------------------------------------------------------

    def admit(self, conn: ClientConnection, decided: Callable[[bool], None]) -> None:
        """Count ``conn`` in; ``decided(False)`` when its user is over the cluster-wide limit."""
        user, client = conn.state.user, conn.state.client
        if not user:
            decided(True)
            return

        async def count_in() -> None:
            try:
                await self._seated.wait()
                allowed = await self.users.connect(user, self.holder, limit=self.limit, ttl=self.users_ttl)
            except Exception as exc:  # Redis down or slow: admit uncounted rather than fail the client
                log.error("user counts unavailable (%r); admitting %s uncounted", exc, client)
                decided(True)
                return
            if allowed:
                if conn.closed:
                    self.spawn(self.users.disconnect(user, self.holder))
                else:
                    if user not in self.counted:
                        self.counted[user] = set()
                        holds = self.users.seat_holds(self.seat, user, True, ttl=self.users_ttl)
                        self.spawn(self._quietly(holds, "seat"))
                    self.counted[user].add(client)
            decided(allowed)

        self.spawn(count_in())

    def left(self, conn: ClientConnection) -> None:
        user, client = conn.state.user, conn.state.client
        clients = self.counted.get(user)
        if clients is None or client not in clients:
            return
        clients.discard(client)
        self.spawn(self._quietly(self.users.disconnect(user, self.holder), "count out"))
        if not clients:
            del self.counted[user]
            self.spawn(
                self._quietly(self.users.seat_holds(self.seat, user, False, ttl=self.users_ttl), "seat")
            )

    # -- presence -----------------------------------------------------------------------------------

    def _has_presence(self, channel: str) -> bool:
        try:
            return self.rules.options_for(channel).presence
        except ClientError:
            return False

    def subscribed(self, conn: ClientConnection, channel: str) -> None:
        if self._has_presence(channel):
            info = _client_info(conn, channel)
            self.spawn(
                self._quietly(
                    self.presence.add_presence(channel, info, ttl=self.presence_ttl, now=0), "presence"
                )
            )

    def unsubscribed(self, conn: ClientConnection, channel: str) -> None:
        if self._has_presence(channel):
            removal = self.presence.remove_presence(channel, conn.state.client, now=0)
            self.spawn(self._quietly(removal, "presence"))

    # -- refresh --------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """From the ticker: refresh what is due, one refresh at a time."""
        if self._refreshing:
            return
        users_due = now >= self._next_users_refresh
        presence_due = now >= self._next_presence_refresh
        if not users_due and not presence_due:
            return
        if users_due:
            self._next_users_refresh = now + self.users_ttl / 3
        if presence_due:
            self._next_presence_refresh = now + self.presence_ttl / 3
        self._refreshing = True
        self.spawn(self._refresh(users_due, presence_due))

    async def _refresh(self, users: bool, presence: bool) -> None:
        try:
            if users:
                held = list(self.counted)
                if held:
                    await self.users.refresh(held, self.holder, ttl=self.users_ttl)
                await self.users.keep_seat(self.seat, self.holder, held, ttl=self.users_ttl)
            if presence:
                for channel, members in list(self.hub.by_channel.items()):
                    if self._has_presence(channel):
                        infos = [_client_info(conn, channel) for conn in list(members)]
                        await self.presence.add_many(channel, infos, ttl=self.presence_ttl)
                        await asyncio.sleep(0)
        except Exception as exc:
            log.error("refreshing users and presence in Redis failed: %r", exc)
        finally:
            self._refreshing = False

    @staticmethod
    async def _quietly(work: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await work
        except Exception as exc:
            log.warning("Redis %s failed: %r", what, exc)


def _client_info(conn: Any, channel: str) -> ClientInfo:
    state = conn.state
    chan_info = state.chan_info.get(channel, b"") if state.chan_info else b""
    return ClientInfo(state.user, state.client, state.info or b"", chan_info)
