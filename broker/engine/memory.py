"""The memory engine: the three engine interfaces for a single node, kept in the process that asks.

History lives in :class:`broker.engine.streams.MemoryStreams` (sans-I/O, synchronous); the coroutines
here never suspend, so a publish through :class:`MemoryHistory` completes within the step that started it
and the writer's order is the order of its calls. Presence entries expire on the clock the caller passes.
The broker has no other node to reach: it hands publications and control messages back to this node.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.engine.broker import Broker, BrokerEvents
from broker.engine.history import HistoryEngine
from broker.engine.presence import PresenceManager, PresenceStats
from broker.engine.streams import MemoryStreams, new_epoch
from broker.publication import ClientInfo, Publication

# Expirations handled per ``maintain`` call: a mass expiry is spread over several ticks.
MAINTAIN_BUDGET = 1000


class MemoryHistory(HistoryEngine):
    def __init__(self, *, epoch_factory: Callable[[], str] = new_epoch) -> None:
        self.streams = MemoryStreams(epoch_factory=epoch_factory)

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
        return self.streams.publish(
            publication,
            history_size=history_size,
            history_ttl=history_ttl,
            history_meta_ttl=history_meta_ttl,
            now=now,
            skip_history=skip_history,
            idempotency_key=idempotency_key,
            idempotency_ttl=idempotency_ttl,
        )

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
        return self.streams.history(
            channel, limit=limit, since=since, reverse=reverse, now=now, history_meta_ttl=history_meta_ttl
        )

    async def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        return self.streams.position(channel, now=now, history_meta_ttl=history_meta_ttl)

    async def remove_history(self, channel: str, *, now: float) -> None:
        self.streams.remove_history(channel, now=now)

    async def recover(
        self, channel: str, *, since: StreamPosition, limit: int, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        return self.streams.recover(
            channel, since=since, limit=limit, now=now, history_meta_ttl=history_meta_ttl
        )

    async def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        return self.streams.recover_cache(channel, since=since, now=now, history_meta_ttl=history_meta_ttl)

    def maintain(self, now: float) -> None:
        self.streams.sweep(now, budget=MAINTAIN_BUDGET)


class MemoryPresence(PresenceManager):
    def __init__(self) -> None:
        # channel → client → (info, expires at)
        self._channels: dict[str, dict[str, tuple[ClientInfo, float]]] = {}

    async def add_presence(self, channel: str, info: ClientInfo, *, ttl: float, now: float) -> None:
        self._channels.setdefault(channel, {})[info.client] = (info, now + ttl)

    async def remove_presence(self, channel: str, client: str, *, now: float) -> None:
        entries = self._channels.get(channel)
        if entries is not None:
            entries.pop(client, None)
            if not entries:
                del self._channels[channel]

    async def presence(self, channel: str, *, now: float) -> dict[str, ClientInfo]:
        entries = self._channels.get(channel, {})
        return {client: info for client, (info, until) in entries.items() if until > now}

    async def presence_stats(self, channel: str, *, now: float) -> PresenceStats:
        live = await self.presence(channel, now=now)
        return PresenceStats(len(live), len({info.user for info in live.values()}))

    def maintain(self, now: float) -> None:
        # The channels checked first go to the back, so that the budget walks over all of them in turn.
        for channel in list(self._channels)[:MAINTAIN_BUDGET]:
            entries = self._channels.pop(channel)
            for client in [c for c, (_, until) in entries.items() if until <= now]:
                del entries[client]
            if entries:
                self._channels[channel] = entries


class MemoryBroker(Broker):
    def __init__(self) -> None:
        self._events: BrokerEvents | None = None
        self._node_id = ""
        self._channels: set[str] = set()

    def start(self, node_id: str, events: BrokerEvents) -> None:
        self._node_id = node_id
        self._events = events

    async def publish(self, publication: Publication) -> None:
        if self._events is not None and publication.channel in self._channels:
            self._events.on_publication(publication)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish_control(self, data: bytes, node_id: str = "") -> None:
        if self._events is not None and node_id in ("", self._node_id):
            self._events.on_control(data)

    async def close(self) -> None:
        self._events = None
        self._channels.clear()
