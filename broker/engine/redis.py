"""The Redis history engine: a channel's stream in a Redis STREAM, its position in a HASH.

Keys and PUB/SUB names are :mod:`broker.engine.redis_keys`'s (one hash tag per channel, so that a Redis
Cluster keeps a channel's keys in one slot):

* the stream — entries with id ``<offset>-0`` and one field ``p``, the publication's body
  (:mod:`broker.engine.redis_codec`); trimmed to ``history_size`` exactly, expiring ``history_ttl``
  after the last publish;
* the meta — ``e`` epoch, ``s`` top offset; expiring ``history_meta_ttl`` after the last publish or
  read, never before the stream;
* an idempotency result — ``e``, ``s`` of the first publish with that key.

A publish with history is one Lua script (checks the idempotency result, creates the epoch if the meta
is gone, increments the offset, appends, trims, sets the expiries, PUBLISHes, stores the result), so
offsets are assigned atomically however many nodes publish, and because Redis runs one script at a time
the publications reach the channel's PUB/SUB subscribers in offset order. Without history a publication
is a plain PUBLISH, or the same script (which then stores nothing in the stream) when it carries an
idempotency key. On a Redis Cluster PUBLISH is SPUBLISH (sharded PUB/SUB: the PUB/SUB name shares the
keys' slot, so the script may publish to it and only that slot's master carries it).
``broadcast=False`` keeps the PUBLISH out, for a node whose publications travel by another broker.

Redis keeps time: the ``now`` arguments are ignored. Semantics are those of
:mod:`broker.engine.history`, checked by the same conformance suite as the memory engine. Scripts run by
EVALSHA and are loaded again when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from broker import errors
from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.engine.history import HistoryEngine
from broker.engine.redis_clients import Client, RedisShards
from broker.engine.redis_codec import decode_body, encode_body, encode_message
from broker.engine.redis_keys import DEFAULT_PREFIX, RedisKeys
from broker.engine.streams import new_epoch
from broker.publication import Publication

# KEYS: stream, meta, result. ARGV: body, size, ttl ms, meta ttl ms, candidate epoch, result ttl ms,
# keep (1: store in history, 0: no history), PUB/SUB channel ('' = do not publish), the command
# ('publish', or 'spublish' on a Redis Cluster: sharded PUB/SUB, the channel in the keys' slot).
# Returns {offset, epoch, duplicate}.
_PUBLISH = """
local stream, meta, result = KEYS[1], KEYS[2], KEYS[3]
local result_ttl = tonumber(ARGV[6])
if result_ttl > 0 then
  local seen = redis.call('hmget', result, 'e', 's')
  if seen[2] then return {tonumber(seen[2]), seen[1], 1} end
end
local offset, epoch = 0, ''
if ARGV[7] == '1' then
  local size, ttl, meta_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  epoch = redis.call('hget', meta, 'e')
  if not epoch then
    epoch = ARGV[5]
    redis.call('hset', meta, 'e', epoch, 's', 0)
  end
  offset = redis.call('hincrby', meta, 's', 1)
  -- A new epoch: entries of the old one would make an explicit id <= their top fail.
  if offset == 1 then redis.call('del', stream) end
  redis.call('xadd', stream, 'MAXLEN', size, offset .. '-0', 'p', ARGV[1])
  redis.call('pexpire', stream, ttl)
  if meta_ttl > 0 then
    redis.call('pexpire', meta, math.max(meta_ttl, ttl))
  else
    redis.call('persist', meta)
  end
end
if ARGV[8] ~= '' then
  -- redis_codec's PUB/SUB form: the position Redis just assigned, then the publisher's body.
  redis.call(ARGV[9], ARGV[8], 'p1:' .. offset .. ':' .. epoch .. ':' .. ARGV[1])
end
if result_ttl > 0 then
  redis.call('hset', result, 'e', epoch, 's', offset)
  redis.call('pexpire', result, result_ttl)
end
return {offset, epoch, 0}
"""

# KEYS: meta, stream. ARGV: candidate epoch, meta ttl ms. The position, creating the meta when it is gone.
_TOUCH = """
local meta = KEYS[1]
local epoch = redis.call('hget', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('hset', meta, 'e', epoch, 's', 0)
end
local meta_ttl = tonumber(ARGV[2])
if meta_ttl > 0 then
  local stream_ttl = redis.call('pttl', KEYS[2])
  redis.call('pexpire', meta, math.max(meta_ttl, stream_ttl))
else
  redis.call('persist', meta)
end
return {tonumber(redis.call('hget', meta, 's')), epoch}
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


class RedisHistory(HistoryEngine):
    def __init__(
        self,
        client: Client | RedisShards,
        *,
        prefix: str = DEFAULT_PREFIX,
        broadcast: bool = True,
        epoch_factory: Callable[[], str] = new_epoch,
    ) -> None:
        # Several Redis shards: each channel's keys live on the shard its name hashes to.
        self._pick: Callable[[str], Client] = (
            client.for_name if isinstance(client, RedisShards) else (lambda channel: client)
        )
        first = client.control if isinstance(client, RedisShards) else client
        self.keys = RedisKeys(prefix)
        self.broadcast = broadcast
        self._new_epoch = epoch_factory
        self._publish = first.register_script(_PUBLISH)
        self._touch = first.register_script(_TOUCH)

    async def publish(
        self,
        publication: Publication,
        *,
        history_size: int,
        history_ttl: float,
        history_meta_ttl: float,
        now: float,
        skip_history: bool = False,
        idempotency_key: str = "",
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
    ) -> PublishResult:
        channel = publication.channel
        keys = self.keys
        keep = not skip_history and history_size > 0 and history_ttl > 0
        result_ttl = _ms(idempotency_ttl) if idempotency_key else 0
        pubsub = keys.publications(channel) if self.broadcast else ""
        publication.offset, publication.epoch = 0, ""
        if not keep and not result_ttl:
            # Nothing to store or check: a plain PUBLISH, as in a channel without history.
            if pubsub:
                client = self._pick(channel)
                if isinstance(client, RedisCluster):
                    await client.spublish(pubsub, encode_message(publication))
                else:
                    await client.publish(pubsub, encode_message(publication))
            return PublishResult(0, "")
        args: list[Any] = [
            encode_body(publication),
            max(history_size, 1),
            _ms(history_ttl),
            _ms(history_meta_ttl),
            self._new_epoch(),
            result_ttl,
            1 if keep else 0,
            pubsub,
            "spublish" if isinstance(self._pick(channel), RedisCluster) else "publish",
        ]
        script_keys = [keys.stream(channel), keys.meta(channel), keys.result(channel, idempotency_key)]
        offset, epoch, duplicate = await self._publish(
            keys=script_keys, args=args, client=self._pick(channel)
        )
        epoch = _text(epoch)
        if duplicate:
            return PublishResult(int(offset), epoch, duplicate=True)
        publication.offset, publication.epoch = int(offset), epoch
        return PublishResult(int(offset), epoch)

    async def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        keys = [self.keys.meta(channel), self.keys.stream(channel)]
        args: list[str | int] = [self._new_epoch(), _ms(history_meta_ttl)]
        top, epoch = await self._touch(keys=keys, args=args, client=self._pick(channel))
        return StreamPosition(int(top), _text(epoch))

    async def history(
        self,
        channel: str,
        *,
        limit: int,
        since: StreamPosition | None,
        reverse: bool,
        now: float,
        history_meta_ttl: float,
    ) -> HistoryResult:
        if since is not None and reverse and since.offset == 0:
            raise errors.BAD_REQUEST()
        position = await self.position(channel, now=now, history_meta_ttl=history_meta_ttl)
        if since is not None and since.epoch and since.epoch != position.epoch:
            raise errors.UNRECOVERABLE_POSITION()
        if limit == 0:
            return HistoryResult([], position)
        count = limit if limit > 0 else None
        stream = self.keys.stream(channel)
        if reverse:
            top = "+" if since is None else f"{since.offset - 1}-0"
            client = self._pick(channel)
            entries = await client.xrevrange(stream, top, "-", count=count) if top != "0-0" else []
        else:
            start = "-" if since is None else f"({since.offset}-0"
            entries = await self._pick(channel).xrange(stream, start, "+", count=count)
        return HistoryResult(_publications(entries, position.epoch), position)

    async def remove_history(self, channel: str, *, now: float) -> None:
        await self._pick(channel).delete(self.keys.stream(channel))

    async def recover(
        self, channel: str, *, since: StreamPosition, limit: int, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        position = await self.position(channel, now=now, history_meta_ttl=history_meta_ttl)
        if since.epoch and since.epoch != position.epoch:
            return RecoveryResult([], position, False)
        entries = await self._pick(channel).xrange(
            self.keys.stream(channel), f"({since.offset}-0", "+", count=limit if limit > 0 else None
        )
        # Publications made between reading the position and the stream are past the position: the
        # subscriber gets them live (held until the answer, see broker.protocol.subscribe_plan), so the
        # answer stops at the position it reports rather than call a complete recovery a failed one.
        pubs = [pub for pub in _publications(entries, position.epoch) if pub.offset <= position.offset]
        if not pubs:
            return RecoveryResult([], position, position.offset == since.offset)
        recovered = pubs[0].offset == since.offset + 1 and pubs[-1].offset == position.offset
        return RecoveryResult(pubs, position, recovered)

    async def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        position = await self.position(channel, now=now, history_meta_ttl=history_meta_ttl)
        up_to_date = since.offset > 0 and since == position
        entries = await self._pick(channel).xrevrange(self.keys.stream(channel), "+", "-", count=1)
        if not entries:
            return RecoveryResult([], position, up_to_date)
        [latest] = _publications(entries, position.epoch)
        if latest.offset != position.offset:
            return RecoveryResult([], position, False)
        return RecoveryResult([] if up_to_date else [latest], position, True)


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _publications(entries: Sequence[Any] | None, epoch: str) -> list[Publication]:
    """Stream entries (``<offset>-0``, ``{p: body}``) as publications of ``epoch``."""
    return [
        decode_body(fields[b"p"], int(_text(entry_id).partition("-")[0]), epoch)
        for entry_id, fields in entries or ()
    ]
