"""The shard's index of its live connections.

Theory of operation
-------------------
A shard owns every connection of the users hashed to it. The hub indexes them three ways: client id →
connection, user → connections, channel → connections. All three are plain dicts changed only from the
shard's event loop, and never with an ``await`` between reading and changing them, so they are always
consistent with each other: a connection is added to all of them at once when its connect succeeds and
removed from all of them at once when its stream ends, whatever the reason.

Connections are any objects with a ``state`` attribute holding a :class:`ConnectionState`; the hub
never writes to a socket itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Protocol

from broker.protocol.state import ConnectionState


class Connection(Protocol):
    state: ConnectionState


def _ignore(channel: str) -> None:
    pass


class Hub:
    """``on_first_subscriber`` / ``on_last_subscriber`` are told when a channel gains its first local
    subscriber and loses its last one (the shard subscribes its data plane to the channel then)."""

    def __init__(
        self,
        on_first_subscriber: Callable[[str], None] = _ignore,
        on_last_subscriber: Callable[[str], None] = _ignore,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.by_client: dict[str, Connection] = {}
        # A user's one connection itself, a set only from the second on: most users have one, and a
        # one-element set costs 216 bytes per connection.
        self.by_user: dict[str, Connection | set[Connection]] = {}
        self.by_channel: dict[str, set[Connection]] = {}
        # By the app name the client sent (immutable after connect): CEL ``app_name == "x"`` hints.
        self.by_app_name: dict[str, set[Connection]] = {}
        self._on_first = on_first_subscriber
        self._on_last = on_last_subscriber
        self._on_count = on_count

    def __len__(self) -> int:
        return len(self.by_client)

    def add(self, conn: Connection) -> None:
        state = conn.state
        if state.client in self.by_client:
            raise ValueError(f"client {state.client} is already registered")
        self.by_client[state.client] = conn
        held = self.by_user.get(state.user)
        if held is None:
            self.by_user[state.user] = conn
        elif isinstance(held, set):
            held.add(conn)
        else:
            self.by_user[state.user] = {held, conn}
        apps = self.by_app_name.get(state.app_name)
        if apps is None:
            self.by_app_name[state.app_name] = {conn}
        else:
            apps.add(conn)
        for channel in state.channels:
            self._index_channel(conn, channel)

    def remove(self, conn: Connection) -> bool:
        """Drop a connection from every index; False when it was not registered."""
        state = conn.state
        if self.by_client.get(state.client) is not conn:
            return False
        del self.by_client[state.client]
        held = self.by_user.get(state.user)
        if held is conn:
            del self.by_user[state.user]
        elif isinstance(held, set):
            held.discard(conn)
            if not held:
                del self.by_user[state.user]
        apps = self.by_app_name.get(state.app_name)
        if apps is not None:
            apps.discard(conn)
            if not apps:
                del self.by_app_name[state.app_name]
        for channel in state.channels:
            self._unindex_channel(conn, channel)
        return True

    def subscribe(self, conn: Connection, channel: str, source: int) -> None:
        conn.state.channels[channel] = source
        if conn.state.client in self.by_client:
            self._index_channel(conn, channel)

    def unsubscribe(self, conn: Connection, channel: str) -> None:
        if conn.state.channels.pop(channel, None) is not None and conn.state.client in self.by_client:
            self._unindex_channel(conn, channel)

    def _index_channel(self, conn: Connection, channel: str) -> None:
        members = self.by_channel.get(channel)
        if members is None:
            members = self.by_channel[channel] = {conn}
            self._on_first(channel)
        else:
            members.add(conn)
        if self._on_count is not None:
            self._on_count(channel, len(members))

    def _unindex_channel(self, conn: Connection, channel: str) -> None:
        members = self.by_channel.get(channel)
        if members is not None:
            members.discard(conn)
            if self._on_count is not None:
                self._on_count(channel, len(members))
            if not members:
                del self.by_channel[channel]
                self._on_last(channel)

    def user_connections(self, user: str) -> Collection[Connection]:
        held = self.by_user.get(user)
        if held is None:
            return ()
        return held if isinstance(held, set) else (held,)

    def candidates(
        self,
        users: Iterable[str] | None = None,
        clients: Iterable[str] | None = None,
        channels: Iterable[str] | None = None,
        app_names: Iterable[str] | None = None,
        transports: frozenset[str] | None = None,
    ) -> Iterator[Connection]:
        """Connections that may match, narrowed by whichever indexes apply (None = no constraint).

        ``transports`` has no index of its own (a handful of values, each shared by many connections):
        it narrows what the indexes give, or the whole hub, by one attribute comparison per connection.
        """
        found = self._indexed(users, clients, channels, app_names)
        if transports is None:
            return iter(found)
        return iter([conn for conn in found if conn.state.transport in transports])

    def _indexed(
        self,
        users: Iterable[str] | None,
        clients: Iterable[str] | None,
        channels: Iterable[str] | None,
        app_names: Iterable[str] | None,
    ) -> list[Connection]:
        pools: list[set[Connection]] = []
        if app_names is not None:
            apps: set[Connection] = set()
            for name in app_names:
                apps |= self.by_app_name.get(name, set())
            pools.append(apps)
        if users is not None:
            pool: set[Connection] = set()
            for user in users:
                pool.update(self.user_connections(user))
            pools.append(pool)
        if clients is not None:
            found = (self.by_client.get(c) for c in clients)
            pools.append({conn for conn in found if conn is not None})
        if channels is not None:
            for channel in channels:
                pools.append(self.by_channel.get(channel, set()))
        if not pools:
            return list(self.by_client.values())
        pools.sort(key=len)
        smallest, rest = pools[0], pools[1:]
        return [conn for conn in smallest if all(conn in other for other in rest)]

    def stats(self) -> dict[str, int]:
        num_users = len(self.by_user) - (1 if "" in self.by_user else 0)
        return {
            "num_clients": len(self.by_client),
            "num_users": num_users,
            "num_anonymous": len(self.user_connections("")),
            "num_channels": len(self.by_channel),
            "num_subs": sum(len(members) for members in self.by_channel.values()),
        }
