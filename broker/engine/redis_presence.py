"""Presence in Redis: per channel a HASH client → entry and a ZSET client → expiry time, in one slot.

The node that holds a client adds its entry on subscribe and refreshes it (the same script) well
within ``ttl``; the entry is removed when the client leaves. Entries of a node that died are dropped
by the next read once their time is past, and both keys expire ``ttl`` after the last add, so a
channel nobody refreshes leaves nothing behind. Reads clean up first and answer in one round trip.
Redis keeps time (``TIME`` inside the scripts): the ``now`` arguments are ignored.

An entry is the JSON array ``[user, client, conn_info, chan_info]`` (the infos as raw JSON text or
empty), so that ``presence_stats`` counts distinct users inside Redis.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from broker.engine.presence import PresenceManager, PresenceStats
from broker.engine.redis_clients import RedisShards
from broker.engine.redis_keys import RedisKeys
from broker.publication import ClientInfo

_NOW = "local t = redis.call('time'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

# KEYS: data, expire. ARGV: ttl seconds, then client, entry pairs.
_ADD = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('zadd', KEYS[2], now + ttl, ARGV[i])
end
local keep = math.ceil(ttl * 1000)
if redis.call('pttl', KEYS[1]) < keep then
  redis.call('pexpire', KEYS[1], keep)
  redis.call('pexpire', KEYS[2], keep)
end
return 1
"""
)

# KEYS: data, expire. Drops the entries whose time is past.
_CLEAN = (
    _NOW
    + """
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #gone > 0 then
  redis.call('hdel', KEYS[1], unpack(gone))
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
end
"""
)

_PRESENCE = _CLEAN + "return redis.call('hgetall', KEYS[1])\n"

_STATS = (
    _CLEAN
    + """
local users, clients = {}, 0
for _, entry in ipairs(redis.call('hvals', KEYS[1])) do
  clients = clients + 1
  users[cjson.decode(entry)[1]] = true
end
local distinct = 0
for _ in pairs(users) do distinct = distinct + 1 end
return {clients, distinct}
"""
)


def encode_entry(info: ClientInfo) -> bytes:
    return orjson.dumps(
        [
            info.user,
            info.client,
            info.conn_info.decode("utf-8", "replace"),
            info.chan_info.decode("utf-8", "replace"),
        ]
    )


def decode_entry(raw: bytes) -> ClientInfo:
    user, client, conn_info, chan_info = orjson.loads(raw)
    return ClientInfo(user, client, conn_info.encode(), chan_info.encode())


class RedisPresence(PresenceManager):
    def __init__(self, shards: RedisShards, keys: RedisKeys) -> None:
        self.shards = shards
        self.keys = keys
        control = shards.control
        self._add = control.register_script(_ADD)
        self._presence = control.register_script(_PRESENCE)
        self._stats = control.register_script(_STATS)

    def _keys(self, channel: str) -> list[str]:
        return [self.keys.presence_data(channel), self.keys.presence_expire(channel)]

    async def add_presence(self, channel: str, info: ClientInfo, *, ttl: float, now: float) -> None:
        await self.add_many(channel, [info], ttl=ttl)

    async def add_many(self, channel: str, infos: Iterable[ClientInfo], *, ttl: float) -> None:
        """Add or refresh several entries of one channel in one script call."""
        args: list[bytes | str | float] = [ttl]
        for info in infos:
            args += [info.client, encode_entry(info)]
        if len(args) > 1:
            await self._add(keys=self._keys(channel), args=args, client=self.shards.for_name(channel))

    async def remove_presence(self, channel: str, client: str, *, now: float) -> None:
        data, expire = self._keys(channel)
        pipe = self.shards.for_name(channel).pipeline(transaction=False)
        pipe.hdel(data, client)
        pipe.zrem(expire, client)
        await pipe.execute()

    async def presence(self, channel: str, *, now: float) -> dict[str, ClientInfo]:
        flat = await self._presence(keys=self._keys(channel), client=self.shards.for_name(channel))
        found: dict[str, ClientInfo] = {}
        for i in range(0, len(flat), 2):
            info = decode_entry(flat[i + 1])
            found[info.client] = info
        return found

    async def presence_stats(self, channel: str, *, now: float) -> PresenceStats:
        clients, users = await self._stats(keys=self._keys(channel), client=self.shards.for_name(channel))
        return PresenceStats(int(clients), int(users))
