"""A shard's part in a node on the Redis engine, composed by :class:`shards.main.Shard` when
``engine`` is ``redis``:

* :class:`shards.redis_channels.RedisChannels` — the channels this shard writes, carried over Redis;
* :class:`shards.roster.RedisRoster` — its clients counted and its presence entries kept in Redis;
* clients' presence questions answered from Redis (every node's subscribers);
* the position checks its channels' writers ask for after their Redis link came back.

Engine coroutines run in tasks here (:func:`broker.eager.run_in_tasks`): the Redis client needs one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

from broker.channels import ChannelRules
from broker.config import Config
from broker.eager import client_outcome, run_in_tasks
from broker.engine import Engines
from broker.engine.redis_keys import RedisKeys
from broker.engine.redis_presence import RedisPresence
from broker.engine.redis_users import RedisUsers, holder_id
from broker.errors import ClientError
from broker.publication import client_info_json
from shards.hub import Hub
from shards.redis_channels import RedisChannels
from shards.roster import RedisRoster

# A user's count on a node expires this many node-info intervals after its last refresh.
USER_COUNTS_TTL_INTERVALS = 10
# Position checks asked by a burst of writers' requests are made together, this long after the first.
CHECK_DELAY = 0.2

Done = Callable[[ClientError | None, Any], None]
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Checking(Protocol):
    """Position checks of this shard's subscribers (``shards.fanout.FanOut``)."""

    async def check_positions(self, only: set[str] | None = None) -> None: ...


class RedisNode:
    def __init__(
        self,
        cfg: Config,
        engines: Engines,
        rules: ChannelRules,
        hub: Hub,
        *,
        index: int,
        boot: str,
        loop: asyncio.AbstractEventLoop,
        spawn: Spawn,
    ) -> None:
        assert isinstance(engines.presence, RedisPresence)
        run_in_tasks()
        self.cfg = cfg
        self.engines = engines
        self.presence = engines.presence
        self.loop = loop
        self.spawn = spawn
        self.channels = RedisChannels(engines.broker, loop, spawn)
        self.roster = RedisRoster(
            RedisUsers(engines.redis, RedisKeys(cfg.redis_prefix)),
            engines.presence,
            rules,
            hub,
            seat=f"{cfg.node_display_name}/{index}",
            holder=holder_id(cfg.node_id, boot),
            limit=cfg.client_user_connection_limit,
            users_ttl=USER_COUNTS_TTL_INTERVALS * float(cfg.node_info_interval),
            presence_ttl=float(cfg.global_presence_ttl),
            spawn=spawn,
        )
        self.roster.seat_timeout = float(cfg.redis_connect_timeout) + float(cfg.redis_io_timeout)
        self.checking: Checking | None = None
        self._checks_due: set[str] = set()

    def start(self) -> None:
        """In the running loop (the broker's links are tasks); nothing has asked for a channel yet."""
        self.engines.broker.start(self.cfg.node_id, self.channels)
        self.spawn(self.roster.take_seat())

    def close(self) -> None:
        self.channels.close()

    def tick(self, now: float) -> None:
        self.roster.tick(now)

    # -- position checks after a writer's Redis link came back ---------------------------------------

    def check_requested(self, channel: str) -> None:
        if not self._checks_due:
            self.loop.call_later(CHECK_DELAY, self._run_checks)
        self._checks_due.add(channel)

    def _run_checks(self) -> None:
        channels, self._checks_due = self._checks_due, set()
        if self.checking is not None:
            self.spawn(self.checking.check_positions(channels))

    # -- a client's presence questions ----------------------------------------------------------------

    def answers(self, method: str) -> bool:
        return method in ("presence", "presence_stats")

    def query(self, method: str, params: dict[str, Any], done: Done) -> None:
        """``presence`` / ``presence_stats`` of a channel over every node, in the merged shapes."""
        channel = str(params.get("channel", ""))
        self.spawn(self._query(method, channel, done))

    async def _query(self, method: str, channel: str, done: Done) -> None:
        try:
            if method == "presence_stats":
                stats = await self.presence.presence_stats(channel, now=0)
                result: dict[str, Any] = {"num_clients": stats.num_clients, "num_users": stats.num_users}
            else:
                found = await self.presence.presence(channel, now=0)
                entries = {
                    client: client_info_json(info.user, client, info.conn_info, info.chan_info)
                    for client, info in found.items()
                }
                result = {"presence": orjson.loads(orjson.dumps(entries))}
        except Exception as exc:
            client_outcome(done)(None, exc)  # 100, one log line
            return
        done(None, result)
