"""Users across nodes in Redis: where each user is connected, and how many connections they hold.

Per user (one hash tag, so one slot) a HASH ``holder → connections`` and a ZSET ``holder → until``
(:mod:`broker.engine.redis_keys`). A *holder* is one shard's life on one node, ``<node id>/<boot id>``:
all of a user's connections on a node live on the shard the user hashes to, and a shard that was killed
starts under a new boot id, so what its former life held is never counted twice — it expires.

* :meth:`RedisUsers.connect` counts a connection in, refusing it when the user already holds
  ``limit`` live connections over every node (the cluster-wide ``client_user_connection_limit``);
* :meth:`RedisUsers.disconnect` counts it out;
* :meth:`RedisUsers.refresh` keeps a holder's entries alive; a node that dies stops refreshing and its
  entries stop counting after ``ttl``;
* :meth:`RedisUsers.nodes_of` answers "which nodes hold this user" for a by-user ``connections`` query.

Every script first drops the entries whose time is past. Redis keeps time (``TIME``).
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.exceptions import NoScriptError

from broker.engine.redis_clients import Client, RedisShards
from broker.engine.redis_keys import RedisKeys

_CLEAN = """
local t = redis.call('time'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #gone > 0 then
  redis.call('hdel', KEYS[1], unpack(gone))
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
end
"""

# ARGV: holder, limit (0 = none), ttl seconds. Returns 1 when counted in, 0 when over the limit.
_CONNECT = (
    _CLEAN
    + """
local holder, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if limit > 0 then
  local total = 0
  for _, n in ipairs(redis.call('hvals', KEYS[1])) do total = total + tonumber(n) end
  if total >= limit then return 0 end
end
redis.call('hincrby', KEYS[1], holder, 1)
redis.call('zadd', KEYS[2], now + ttl, holder)
local keep = math.ceil(ttl * 1000)
redis.call('pexpire', KEYS[1], keep)
redis.call('pexpire', KEYS[2], keep)
return 1
"""
)

# ARGV: holder.
_DISCONNECT = """
if redis.call('hincrby', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('hdel', KEYS[1], ARGV[1])
  redis.call('zrem', KEYS[2], ARGV[1])
end
return 1
"""

# ARGV: holder, ttl seconds. Extends the holder's entry when it has one.
_REFRESH = (
    _CLEAN
    + """
if redis.call('hexists', KEYS[1], ARGV[1]) == 1 then
  local ttl = tonumber(ARGV[2])
  redis.call('zadd', KEYS[2], now + ttl, ARGV[1])
  local keep = math.ceil(ttl * 1000)
  redis.call('pexpire', KEYS[1], keep)
  redis.call('pexpire', KEYS[2], keep)
end
return 1
"""
)

_HOLDERS = _CLEAN + "return redis.call('hgetall', KEYS[1])\n"

# ARGV: holder. Its entry goes, whatever its count.
_FORGET = """
redis.call('hdel', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""

REFRESH_BATCH = 1000


def holder_id(node_id: str, boot: str) -> str:
    return f"{node_id}/{boot}"


def node_of(holder: str) -> str:
    return holder.rpartition("/")[0]


class RedisUsers:
    def __init__(self, shards: RedisShards, keys: RedisKeys) -> None:
        self.shards = shards
        self.keys = keys
        control = shards.control
        self._connect = control.register_script(_CONNECT)
        self._disconnect = control.register_script(_DISCONNECT)
        self._refresh = control.register_script(_REFRESH)
        self._holders = control.register_script(_HOLDERS)
        self._forget = control.register_script(_FORGET)

    def _keys(self, user: str) -> list[str]:
        return [self.keys.user_nodes(user), self.keys.user_expire(user)]

    async def connect(self, user: str, holder: str, *, limit: int, ttl: float) -> bool:
        client = self.shards.for_name(user)
        counted = await self._connect(keys=self._keys(user), args=[holder, limit, ttl], client=client)
        return bool(counted)

    async def disconnect(self, user: str, holder: str) -> None:
        await self._disconnect(keys=self._keys(user), args=[holder], client=self.shards.for_name(user))

    async def refresh(self, users: Iterable[str], holder: str, *, ttl: float) -> int:
        """Keep ``holder``'s entries of ``users`` alive; pipelined per Redis shard, in batches."""
        done = 0
        batch: list[str] = []
        for user in users:
            batch.append(user)
            if len(batch) >= REFRESH_BATCH:
                done += await self._refresh_batch(batch, holder, ttl)
                batch = []
        if batch:
            done += await self._refresh_batch(batch, holder, ttl)
        return done

    async def _refresh_batch(self, users: list[str], holder: str, ttl: float) -> int:
        by_shard: dict[int, list[str]] = {}
        for user in users:
            by_shard.setdefault(self.shards.index_of(user), []).append(user)
        for index, shard_users in by_shard.items():
            client = self.shards.clients[index]
            try:
                await self._refresh_pipelined(client, shard_users, holder, ttl)
            except NoScriptError:
                # Redis restarted (or a Cluster master has not seen the script): load it, once more.
                await client.script_load(_REFRESH)
                await self._refresh_pipelined(client, shard_users, holder, ttl)
        return len(users)

    async def _refresh_pipelined(self, client: Client, users: list[str], holder: str, ttl: float) -> None:
        # EVALSHA in a pipeline (a Cluster pipeline routes each by its keys); scripts objects do not
        # load themselves inside a Cluster pipeline, hence the fallback above.
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.evalsha(self._refresh.sha, 2, *self._keys(user), holder, ttl)
        await pipe.execute()

    # -- seats: a shard's lives on a node ---------------------------------------------------------------

    async def take_seat(self, seat: str, holder: str, *, ttl: float) -> int:
        """``holder`` is the seat's new life: what the previous life counted is taken back now.

        Returns the number of users whose entries of the previous life were removed.
        """
        client = self.shards.for_name(seat)
        users_key, holder_key = self.keys.seat_users(seat), self.keys.seat_holder(seat)
        found = await client.set(holder_key, holder, get=True, px=_ms(ttl))
        previous = _text(found) if isinstance(found, bytes | str) else ""
        users = [_text(user) for user in await client.smembers(users_key)] if previous else []
        if previous and previous != holder:
            for user in users:
                await self._forget(keys=self._keys(user), args=[previous], client=self.shards.for_name(user))
        await client.delete(users_key)
        return len(users)

    async def seat_holds(self, seat: str, user: str, holding: bool, *, ttl: float) -> None:
        """The seat's life now holds ``user`` (its first connection here) or no longer does (its last)."""
        client = self.shards.for_name(seat)
        key = self.keys.seat_users(seat)
        if holding:
            pipe = client.pipeline(transaction=False)
            pipe.sadd(key, user)
            pipe.pexpire(key, _ms(ttl))
            await pipe.execute()
        else:
            await client.srem(key, user)

    async def keep_seat(self, seat: str, holder: str, users: list[str], *, ttl: float) -> None:
        """Refresh the seat's keys with its users' entries, its user set written anew (so that an
        update lost in a race heals at the next refresh)."""
        client = self.shards.for_name(seat)
        users_key = self.keys.seat_users(seat)
        pipe = client.pipeline(transaction=False)
        pipe.set(self.keys.seat_holder(seat), holder, px=_ms(ttl))
        pipe.delete(users_key)
        for start in range(0, len(users), REFRESH_BATCH):
            pipe.sadd(users_key, *users[start : start + REFRESH_BATCH])
        pipe.pexpire(users_key, _ms(ttl))
        await pipe.execute()

    async def nodes_of(self, user: str) -> dict[str, int]:
        """The live nodes holding ``user`` → the user's connections there."""
        flat = await self._holders(keys=self._keys(user), client=self.shards.for_name(user))
        nodes: dict[str, int] = {}
        for i in range(0, len(flat), 2):
            node = node_of(_text(flat[i]))
            nodes[node] = nodes.get(node, 0) + int(flat[i + 1])
        return nodes


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
