"""Engines: how a node keeps history and presence and talks to the other nodes, chosen once at boot.

Each interface has a small module of its own (:mod:`broker.engine.history`, :mod:`broker.engine.presence`,
:mod:`broker.engine.broker`) and is implemented by every engine (today :mod:`broker.engine.memory`).
"""

from __future__ import annotations

from typing import NamedTuple

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


def engines_for(cfg: Config) -> Engines:
    """The engines of this node, chosen once at boot.

    Only the memory engine exists yet: configuration refuses any other ``engine`` / ``broker`` /
    ``presence_manager`` at start (``broker.config_keys``), so the choice is made here and nowhere else.
    """
    del cfg  # the engine keys are read here once other engines exist
    return Engines(MemoryBroker(), MemoryHistory(), MemoryPresence())


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
