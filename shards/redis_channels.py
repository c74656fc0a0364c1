"""A writer shard's channels on Redis: which process of a node talks to Redis for which channel.

With the Redis engine the writer shard of a channel (:func:`broker.hashing.writer_for`) is the one
process of its node that speaks to Redis for that channel: it runs the publish script (which PUBLISHes),
holds the node's one Redis subscription to the channel, and sends what arrives through its XPUB socket
to the node's shards, as in a single node. Redis work per publication is therefore one PUBLISH and one
delivery per *node* that has subscribers, whatever the number of shards.

The XPUB socket tells when the first shard of the node subscribes to a channel (:meth:`wanted`) and when
the last one left it (:meth:`released`, after the shards' own grace period). The shards are welcomed only
once Redis confirmed the subscription, so a publication made on any node after a subscribe reply reaches
the client. Redis is unsubscribed after a further short grace, so a shard that resubscribes at once
(a writer restart re-arms every subscription) does not open a window. After the link to Redis came back,
every channel's subscribers are asked to check their positions: publications may have been lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from broker.engine.broker import Broker
from broker.publication import Publication

log = logging.getLogger("switchboard.shard")

RELEASE_GRACE = 1.0


class NodeSink(Protocol):
    """The writer's XPUB socket: publications to the node's shards, and the check marker."""

    def publish(self, publication: Publication) -> bool: ...

    def check(self, channel: str) -> None: ...


class RedisChannels:
    """Implements :class:`broker.ipc.pubsub.ChannelSource` and :class:`broker.engine.BrokerEvents`."""

    def __init__(
        self,
        broker: Broker,
        loop: asyncio.AbstractEventLoop,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.broker = broker
        self.loop = loop
        self.spawn = spawn
        self.sink: NodeSink | None = None
        self.subscribed: set[str] = set()
        self._pending: dict[str, list[Callable[[], None]]] = {}
        self._releases: dict[str, asyncio.TimerHandle] = {}

    # -- ChannelSource ------------------------------------------------------------------------------

    def wanted(self, channel: str, welcome: Callable[[], None]) -> None:
        timer = self._releases.pop(channel, None)
        if timer is not None:
            timer.cancel()
        if channel in self.subscribed:
            welcome()
            return
        waiting = self._pending.get(channel)
        if waiting is not None:
            waiting.append(welcome)
            return
        self._pending[channel] = [welcome]
        self.spawn(self._subscribe(channel))

    async def _subscribe(self, channel: str) -> None:
        try:
            await self.broker.subscribe(channel)
            self.subscribed.add(channel)
        except TimeoutError:
            log.error(
                "Redis did not confirm the subscription to %s in time; it is retried on reconnect", channel
            )
            self.subscribed.add(channel)  # the link keeps it and subscribes it again when it reconnects
        finally:
            # Welcomed even when Redis failed: the shards would release their waiters after a second
            # anyway, and a gap shows up as soon as publications flow again.
            for welcome in self._pending.pop(channel, ()):
                welcome()

    def released(self, channel: str) -> None:
        if channel in self._releases:
            return
        self._releases[channel] = self.loop.call_later(RELEASE_GRACE, self._release, channel)

    def _release(self, channel: str) -> None:
        self._releases.pop(channel, None)
        if channel in self.subscribed:
            self.subscribed.discard(channel)
            self.spawn(self.broker.unsubscribe(channel))

    # -- BrokerEvents -------------------------------------------------------------------------------

    def on_publication(self, publication: Publication) -> None:
        if self.sink is not None:
            self.sink.publish(publication)

    def on_control(self, data: bytes) -> None:
        del data  # a shard listens to no control names

    def on_resubscribed(self, count: int) -> None:
        del count
        if self.sink is not None:
            for channel in self.subscribed:
                self.sink.check(channel)

    def close(self) -> None:
        for timer in self._releases.values():
            timer.cancel()
        self._releases.clear()
