"""Engines: how a node keeps history and presence and talks to the other nodes, chosen once at boot.

Each interface has a small module of its own (:mod:`broker.engine.history`, :mod:`broker.engine.presence`,
:mod:`broker.engine.broker`) and is implemented by every engine (today :mod:`broker.engine.memory`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from broker.config import Config
from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.engine.broker import Broker, BrokerEvents
from broker.engine.history import HistoryEngine
from broker.engine.memory import MemoryBroker, MemoryHistory, MemoryPresence
from broker.engine.presence import PresenceManager, PresenceStats
from broker.engine.streams import MemoryStreams, new_epoch
from broker.publication import ClientInfo


class Engines(NamedTuple):
    broker: Broker
    history: HistoryEngine
    presence: PresenceManager
    # The Redis connections behind the three (None with the memory engine), closed at exit.
    redis: Any = None

    async def close(self) -> None:
        await self.broker.close()
        if self.redis is not None:
            await self.redis.close()


def engines_for(cfg: Config, *, label: str = "", control: bool = False) -> Engines:
    """The engines of this process, chosen once at boot from ``engine``.

    ``control``: this process speaks for its node on the Redis broker (the router); the shards only
    carry channels. Redis modules are imported only when Redis is the engine.
    """
    if cfg.engine != "redis":
        return Engines(MemoryBroker(), MemoryHistory(), MemoryPresence())
    from broker.engine.redis import RedisHistory
    from broker.engine.redis_broker import RedisBroker
    from broker.engine.redis_clients import RedisShards
    from broker.engine.redis_keys import RedisKeys
    from broker.engine.redis_presence import RedisPresence

    shards = RedisShards.from_config(cfg)
    keys = RedisKeys(cfg.redis_prefix)
    return Engines(
        RedisBroker(shards, keys, control=control, label=label),
        RedisHistory(shards, prefix=cfg.redis_prefix),
        RedisPresence(shards, keys),
        shards,
    )


__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL",
    "Broker",
    "BrokerEvents",
    "ClientInfo",
    "Engines",
    "HistoryEngine",
    "HistoryResult",
    "MemoryBroker",
    "MemoryHistory",
    "MemoryPresence",
    "MemoryStreams",
    "PresenceManager",
    "PresenceStats",
    "PublishResult",
    "RecoveryResult",
    "StreamPosition",
    "engines_for",
    "new_epoch",
]
