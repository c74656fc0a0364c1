"""User status: when a user was last active (told by the API or the client's ``update_user_status`` RPC)
and last online (kept by the server), as Centrifugo PRO's ``get_user_status`` answers it.

One small interface, :class:`UserStatusStore`, with two implementations: in memory (the memory engine: a
user's status lives on the shard all of the user's connections live on) and in Redis (the Redis engine: one
hash per user, shared by every node). Entries are forgotten :data:`STATUS_TTL` after their last update.
Times are Unix seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from broker.engine.redis_keys import RedisKeys

if TYPE_CHECKING:
    from broker.engine.redis_clients import RedisShards

STATUS_TTL = 30 * 24 * 3600  # as Centrifugo PRO's user_status.expire_interval default


class UserStatusStore(Protocol):
    async def set_active(self, users: list[str], at: int) -> None: ...

    async def set_online(self, users: list[str], at: int) -> None: ...

    async def get(self, users: list[str]) -> dict[str, tuple[int, int]]:
        """user → (active, online); users without a status are left out."""
        ...

    async def delete(self, users: list[str]) -> None: ...


class MemoryUserStatus:
    def __init__(self, ttl: float = STATUS_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[str, list[int]] = {}  # user → [active, online, updated]

    async def set_active(self, users: list[str], at: int) -> None:
        self.record(users, 0, at)

    async def set_online(self, users: list[str], at: int) -> None:
        self.record(users, 1, at)

    def record(self, users: list[str], field: int, at: int) -> None:
        """``field`` 0 (active) or 1 (online) of ``users`` at ``at``, at once (no await needed)."""
        for user in users:
            entry = self._entries.setdefault(user, [0, 0, 0])
            entry[field] = max(entry[field], at)
            entry[2] = max(entry[2], at)

    async def get(self, users: list[str]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for user in users:
            entry = self._entries.get(user)
            if entry is not None:
                out[user] = (entry[0], entry[1])
        return out

    async def delete(self, users: list[str]) -> None:
        for user in users:
            self._entries.pop(user, None)

    def forget_expired(self, now: float) -> int:
        old = [user for user, entry in self._entries.items() if entry[2] + self.ttl <= now]
        for user in old:
            del self._entries[user]
        return len(old)

    def __len__(self) -> int:
        return len(self._entries)


class RedisUserStatus:
    """A HASH per user (``a``: active, ``o``: online) with a TTL renewed on every update."""

    def __init__(self, shards: RedisShards, keys: RedisKeys, ttl: float = STATUS_TTL) -> None:
        self.shards = shards
        self.keys = keys
        self.ttl_ms = int(ttl * 1000)

    async def set_active(self, users: list[str], at: int) -> None:
        await self._set(users, "a", at)

    async def set_online(self, users: list[str], at: int) -> None:
        await self._set(users, "o", at)

    def _by_shard(self, users: list[str]) -> dict[int, list[str]]:
        grouped: dict[int, list[str]] = {}
        for user in users:
            grouped.setdefault(self.shards.index_of(user), []).append(user)
        return grouped

    async def _set(self, users: list[str], field: str, at: int) -> None:
        # One pipeline per Redis shard, not one round trip per user (a call may name 1000 users).
        for index, shard_users in self._by_shard(users).items():
            pipe = self.shards.clients[index].pipeline(transaction=False)
            for user in shard_users:
                key = self.keys.user_status(user)
                pipe.hset(key, field, at)
                pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def get(self, users: list[str]) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for index, shard_users in self._by_shard(users).items():
            pipe = self.shards.clients[index].pipeline(transaction=False)
            for user in shard_users:
                pipe.hmget(self.keys.user_status(user), ["a", "o"])
            for user, (active, online) in zip(shard_users, await pipe.execute(), strict=True):
                if active is not None or online is not None:
                    out[user] = (int(active or 0), int(online or 0))
        return out

    async def delete(self, users: list[str]) -> None:
        for index, shard_users in self._by_shard(users).items():
            pipe = self.shards.clients[index].pipeline(transaction=False)
            for user in shard_users:
                pipe.delete(self.keys.user_status(user))
            await pipe.execute()
