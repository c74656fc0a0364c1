"""The presence interface: who is subscribed to a channel, across every node, with expiry.

An entry is a client's ``ClientInfo`` under its client id. The node that holds the client adds the entry
when it subscribes, refreshes it (the same call) more often than ``ttl``, and removes it when it leaves;
entries of a node that died without removing them expire after ``ttl``. ``presence`` and
``presence_stats`` answer from the entries alone, each in one round trip of the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

from broker.publication import ClientInfo


class PresenceStats(NamedTuple):
    num_clients: int
    num_users: int


class PresenceManager(ABC):
    @abstractmethod
    async def add_presence(self, channel: str, info: ClientInfo, *, ttl: float, now: float) -> None:
        """Add or refresh ``info`` in ``channel`` until ``now + ttl``."""

    @abstractmethod
    async def remove_presence(self, channel: str, client: str, *, now: float) -> None:
        """Remove the client's entry (nothing happens when there is none)."""

    @abstractmethod
    async def presence(self, channel: str, *, now: float) -> dict[str, ClientInfo]:
        """The live entries by client id."""

    @abstractmethod
    async def presence_stats(self, channel: str, *, now: float) -> PresenceStats:
        """Counts of the live entries: clients, and distinct users (the anonymous user "" counts once)."""

    def maintain(self, now: float) -> None:  # noqa: B027 (optional: most engines have no upkeep)
        """Periodic upkeep; the memory manager drops expired entries (a bounded amount per call)."""
