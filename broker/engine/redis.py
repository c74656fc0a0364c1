"""The Redis history engine: a channel's stream in a Redis STREAM, its position in a HASH.

Keys (one hash tag per channel, so that a Redis Cluster keeps a channel's keys in one slot):

* ``<prefix>.stream.{<channel>}`` — entries with id ``<offset>-0``, fields ``h`` (header JSON), ``d``
  (data), ``c`` (conn_info), ``i`` (chan_info); trimmed to ``history_size`` exactly, expiring
  ``history_ttl`` after the last publish;
* ``<prefix>.meta.{<channel>}`` — ``e`` epoch, ``s`` top offset; expiring ``history_meta_ttl`` after the
  last publish or read, never before the stream;
* ``<prefix>.result.{<channel>}.<idempotency key>`` — ``e``, ``s`` of the first publish with that key.

A publish is one Lua script (checks the idempotency result, creates the epoch if the meta is gone,
increments the offset, appends, trims, sets the expiries, stores the result), so offsets are assigned
atomically however many nodes publish. Redis keeps time: the ``now`` arguments are ignored. Semantics
are those of :mod:`broker.engine.history`, checked by the same conformance suite as the memory engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
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
from broker.engine.streams import new_epoch
from broker.publication import Publication

Client = Redis | RedisCluster

# KEYS: stream, meta, result. ARGV: header, data, conn_info, chan_info, size, ttl ms, meta ttl ms,
# candidate epoch, result ttl ms, keep (1: store in history, 0: no history). Returns {offset, epoch, dup}.
_PUBLISH = """
local stream, meta, result = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, meta_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local result_ttl, keep = tonumber(ARGV[9]), ARGV[10] == '1'
if result_ttl > 0 then
  local seen = redis.call('hmget', result, 'e', 's')
  if seen[2] then return {tonumber(seen[2]), seen[1], 1} end
end
local offset, epoch = 0, ''
if keep then
  epoch = redis.call('hget', meta, 'e')
  if not epoch then
    epoch = ARGV[8]
    redis.call('hset', meta, 'e', epoch, 's', 0)
  end
  offset = redis.call('hincrby', meta, 's', 1)
  if offset == 1 then redis.call('del', stream) end
  redis.call('xadd', stream, 'MAXLEN', size, offset .. '-0',
    'h', ARGV[1], 'd', ARGV[2], 'c', ARGV[3], 'i', ARGV[4])
  redis.call('pexpire', stream, ttl)
  if meta_ttl > 0 then
    redis.call('pexpire', meta, math.max(meta_ttl, ttl))
  else
    redis.call('persist', meta)
  end
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
        self, client: Client, *, prefix: str = "switchboard", epoch_factory: Callable[[], str] = new_epoch
    ) -> None:
        self.client = client
        self.prefix = prefix
        self._new_epoch = epoch_factory
        self._publish = client.register_script(_PUBLISH)
        self._touch = client.register_script(_TOUCH)

    def stream_key(self, channel: str) -> str:
        return f"{self.prefix}.stream.{{{channel}}}"

    def meta_key(self, channel: str) -> str:
        return f"{self.prefix}.meta.{{{channel}}}"

    def result_key(self, channel: str, idempotency_key: str) -> str:
        return f"{self.prefix}.result.{{{channel}}}.{idempotency_key}"

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
        keep = not skip_history and history_size > 0 and history_ttl > 0
        header = _header(publication)
        result_ttl = _ms(idempotency_ttl) if idempotency_key else 0
        keys = [self.stream_key(channel), self.meta_key(channel), self.result_key(channel, idempotency_key)]
        args: list[Any] = [
            header,
            publication.data,
            publication.conn_info,
            publication.chan_info,
            max(history_size, 1),
            _ms(history_ttl),
            _ms(history_meta_ttl),
            self._new_epoch(),
            result_ttl,
            1 if keep else 0,
        ]
        offset, epoch, duplicate = await self._publish(keys=keys, args=args)
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if duplicate:
            return PublishResult(int(offset), epoch, duplicate=True)
        publication.offset, publication.epoch = int(offset), epoch
        return PublishResult(int(offset), epoch)

    async def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        keys = [self.meta_key(channel), self.stream_key(channel)]
        top, epoch = await self._touch(keys=keys, args=[self._new_epoch(), _ms(history_meta_ttl)])
        return StreamPosition(int(top), epoch.decode() if isinstance(epoch, bytes) else str(epoch))

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
        stream = self.stream_key(channel)
        if reverse:
            top = "+" if since is None else f"{since.offset - 1}-0"
            entries = await self.client.xrevrange(stream, top, "-", count=count) if top != "0-0" else []
        else:
            start = "-" if since is None else f"({since.offset}-0"
            entries = await self.client.xrange(stream, start, "+", count=count)
        return HistoryResult(_publications(channel, entries, position.epoch), position)

    async def remove_history(self, channel: str, *, now: float) -> None:
        await self.client.delete(self.stream_key(channel))

    async def recover(
        self, channel: str, *, since: StreamPosition, limit: int, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        position = await self.position(channel, now=now, history_meta_ttl=history_meta_ttl)
        if since.epoch and since.epoch != position.epoch:
            return RecoveryResult([], position, False)
        entries = await self.client.xrange(
            self.stream_key(channel), f"({since.offset}-0", "+", count=limit if limit > 0 else None
        )
        pubs = _publications(channel, entries, position.epoch)
        if not pubs:
            return RecoveryResult([], position, position.offset == since.offset)
        recovered = pubs[0].offset == since.offset + 1 and pubs[-1].offset == position.offset
        return RecoveryResult(pubs, position, recovered)

    async def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        position = await self.position(channel, now=now, history_meta_ttl=history_meta_ttl)
        up_to_date = since.offset > 0 and since == position
        entries = await self.client.xrevrange(self.stream_key(channel), "+", "-", count=1)
        if not entries:
            return RecoveryResult([], position, up_to_date)
        [latest] = _publications(channel, entries, position.epoch)
        if latest.offset != position.offset:
            return RecoveryResult([], position, False)
        return RecoveryResult([] if up_to_date else [latest], position, True)


def _header(publication: Publication) -> bytes:
    header: dict[str, Any] = {}
    if publication.tags:
        header["t"] = publication.tags
    if publication.user is not None:
        header["u"] = publication.user
        header["c"] = publication.client
    if publication.time_ms:
        header["tm"] = publication.time_ms
    return orjson.dumps(header)


def _publications(channel: str, entries: Sequence[Any] | None, epoch: str) -> list[Publication]:
    out: list[Publication] = []
    for entry_id, fields in entries or ():
        offset = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")[0])
        header = orjson.loads(fields[b"h"])
        out.append(
            Publication(
                channel,
                fields[b"d"],
                offset=offset,
                epoch=epoch,
                tags=header.get("t"),
                user=header.get("u"),
                client=header.get("c", ""),
                conn_info=fields[b"c"],
                chan_info=fields[b"i"],
                time_ms=header.get("tm", 0),
            )
        )
    return out
