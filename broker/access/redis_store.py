"""Session management entries kept in Redis (the Redis engine), so that a node or shard that starts later
refuses what was revoked or blocked before it started.

A HASH ``<prefix>.access.entries`` (entry id → the change as JSON) and a ZSET ``<prefix>.access.expire``
(entry id → ``expire_at``, +inf for never), on the control Redis. Each change is written by every node that
applies it (the write is idempotent); ``unblock_user`` removes the block. Loading drops the expired ones.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from broker.engine.redis_clients import RedisShards


def entry_id(change: dict[str, Any]) -> str:
    kind = change["kind"]
    if kind == "revoke_token":
        return f"token:{change['uid']}"
    if kind == "invalidate_user_tokens":
        channel = change.get("channel")
        # A channel's subscription tokens are an entry of their own, beside the connection tokens'.
        return f"invalidated:{change['user']}" + (f"\x00{channel}" if channel else "")
    return f"blocked:{change['user']}"  # block_user and unblock_user name the same entry


class RedisAccessStore:
    def __init__(self, shards: RedisShards, prefix: str) -> None:
        self.client = shards.control
        self.entries = f"{prefix}.access.entries"
        self.expire = f"{prefix}.access.expire"

    async def save(self, change: dict[str, Any]) -> None:
        key = entry_id(change)
        pipe = self.client.pipeline(transaction=True)
        if change["kind"] == "unblock_user":
            pipe.hdel(self.entries, key)
            pipe.zrem(self.expire, key)
        else:
            expire_at = float(change.get("expire_at") or 0)
            pipe.hset(self.entries, key, orjson.dumps(change))
            pipe.zadd(self.expire, {key: expire_at if expire_at else float("inf")})
        await pipe.execute()

    async def load(self) -> list[dict[str, Any]]:
        now = time.time()
        gone = await self.client.zrangebyscore(self.expire, "-inf", now)
        if gone:
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.entries, *gone)
            pipe.zremrangebyscore(self.expire, "-inf", now)
            await pipe.execute()
        raw = await self.client.hvals(self.entries)
        out = []
        for value in raw:
            try:
                change = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(change, dict):
                out.append(change)
        return out
