"""The Redis broker: publications and control messages between nodes over Redis PUB/SUB.

Each Redis shard gets one subscriber connection (:class:`PubSubLink`) carrying every name this process
listens to on it: a channel's publications (``P.client.{ch}``) while the node has subscribers of the
channel, and — for the process that speaks for the node — the control names (``P.control`` and
``P.node.<uid>``). A link that loses Redis reconnects with backoff, subscribes everything again and then
reports the channels it resubscribed (``on_resubscribed``): publications sent meanwhile were lost for
this node, and the shards check their positioned subscribers (a gap → 2500 / 3010, recovery from the
stream). Publications are decoded here (:mod:`broker.engine.redis_codec`) and handed on in the order
Redis delivered them, which is the order the publish script assigned their offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from broker.engine.broker import Broker, BrokerEvents
from broker.engine.redis_clients import RedisShards
from broker.engine.redis_codec import MalformedMessage, decode_message, encode_message
from broker.engine.redis_keys import RedisKeys
from broker.publication import Publication

log = logging.getLogger("switchboard.redis")

RECONNECT_FIRST_DELAY = 0.05
RECONNECT_MAX_DELAY = 2.0
SUBSCRIBE_BATCH = 500
_LINK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

Handler = Callable[[bytes], None]
_MESSAGES = ("message", "smessage", b"message", b"smessage")
_CONFIRMATIONS = ("subscribe", "ssubscribe", b"subscribe", b"ssubscribe")


class PubSubLink:
    """One subscriber connection to one Redis shard, kept subscribed to ``names`` across reconnects."""

    def __init__(
        self,
        client: Redis,
        keepalive: str,
        on_resubscribed: Callable[[list[bytes]], None],
        label: str,
        *,
        sharded: bool = False,
    ) -> None:
        self.client = client
        self.label = label
        # Sharded PUB/SUB (Redis Cluster): the names other than the keepalive are SSUBSCRIBEd, each on
        # its own (one SSUBSCRIBE may only name channels of one slot).
        self.sharded = sharded
        self.keepalive = keepalive.encode()
        # name → what to do with its messages; the keepalive name keeps the connection listening when
        # nothing else is subscribed (redis-py stops reading a PubSub without subscriptions).
        self.handlers: dict[bytes, Handler] = {keepalive.encode(): _ignore}
        self._on_resubscribed = on_resubscribed
        self._pubsub: PubSub | None = None
        self._confirmations: dict[bytes, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def subscribe(self, name: str, handler: Handler) -> None:
        """Listen to ``name``; returns once Redis confirmed it (or raises after the caller's deadline)."""
        key = name.encode()
        self.handlers[key] = handler
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(key, []).append(confirmed)
        pubsub = self._pubsub
        try:
            if pubsub is not None:
                try:
                    await self._subscribe(pubsub, [key])
                except _LINK_ERRORS:
                    pass  # the reading loop reconnects and subscribes it again
            await confirmed
        finally:
            # A caller that stopped waiting (its deadline) leaves nothing behind.
            waiting = self._confirmations.get(key)
            if waiting is not None and confirmed in waiting:
                waiting.remove(confirmed)
                if not waiting:
                    del self._confirmations[key]

    async def _subscribe(self, pubsub: PubSub, names: list[bytes]) -> None:
        if not self.sharded:
            for start in range(0, len(names), SUBSCRIBE_BATCH):
                await pubsub.subscribe(*names[start : start + SUBSCRIBE_BATCH])
            return
        for name in names:
            if name == self.keepalive:
                await pubsub.subscribe(name)
            else:
                await pubsub.ssubscribe(name)

    async def unsubscribe(self, name: str) -> None:
        key = name.encode()
        if self.handlers.pop(key, None) is None:
            return
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await (pubsub.sunsubscribe(key) if self.sharded else pubsub.unsubscribe(key))
            except _LINK_ERRORS:
                pass  # gone with the connection; not subscribed again after the reconnect

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY
        lost = False
        while not self._closed:
            pubsub = self.client.pubsub()
            try:
                # Connected first, then published: a name asked for while the others are being
                # subscribed goes out on this same connection (redis-py would open a second, unread
                # one for a command sent before the first has connected).
                await pubsub.connect()  # type: ignore[no-untyped-call]
                self._pubsub = pubsub
                names = list(self.handlers)
                await self._subscribe(pubsub, names)
                async for message in pubsub.listen():
                    self._on_message(message)
                    if not self.connected.is_set() and message.get("type") in _CONFIRMATIONS:
                        self.connected.set()
                        delay = RECONNECT_FIRST_DELAY
                        if lost:
                            lost = False
                            log.warning("%s: Redis is back; resubscribed %d names", self.label, len(names))
                            self._on_resubscribed(names)
            except _LINK_ERRORS as exc:
                if not lost:
                    log.error("%s: lost Redis (%s); reconnecting", self.label, exc)
                lost = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: subscriber failed; reconnecting", self.label)
                lost = True
            finally:
                self._pubsub = None
                self.connected.clear()
                await _close_quietly(pubsub)
            if not self._closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)

    def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        name = message.get("channel")
        if not isinstance(name, bytes):
            return
        if kind in _MESSAGES:
            handler = self.handlers.get(name)
            data = message.get("data")
            if handler is not None and isinstance(data, bytes):
                try:
                    handler(data)
                except Exception:
                    log.exception("%s: handling a message of %r failed", self.label, name)
        elif kind in _CONFIRMATIONS:
            for waiter in self._confirmations.pop(name, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for waiters in self._confirmations.values():
            for waiter in waiters:
                waiter.cancel()
        self._confirmations.clear()


def _ignore(data: bytes) -> None:
    del data


async def _close_quietly(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()
    except Exception:
        pass


class RedisBroker(Broker):
    """Channel PUB/SUB on the channel's shard, control on the first shard.

    ``control`` says whether this process speaks for the node (the router does): only then does it
    listen to the control names. The shards of a node listen to the channels they write.
    """

    def __init__(
        self, shards: RedisShards, keys: RedisKeys, *, control: bool = False, label: str = ""
    ) -> None:
        self.shards = shards
        self.keys = keys
        self.control = control
        self.label = label or "redis"
        self.subscribe_timeout = shards.timeouts.io
        self._events: BrokerEvents | None = None
        self._links: list[PubSubLink] = []
        # Redis Cluster: one sharded link per master, made when a channel on it is first subscribed.
        self._masters: dict[tuple[str, int], PubSubLink] = {}

    def start(self, node_id: str, events: BrokerEvents) -> None:
        self._events = events
        keepalive = f"{self.keys.prefix}.keepalive"
        self._links = [
            PubSubLink(
                self.shards.pubsub_client(i), keepalive, self._resubscribed, f"{self.label} redis[{i}]"
            )
            for i in range(len(self.shards.clients))
        ]
        if self.control:
            control = self._links[0]
            control.handlers[self.keys.control.encode()] = events.on_control
            control.handlers[self.keys.node(node_id).encode()] = events.on_control
        for link in self._links:
            link.start()

    async def wait_connected(self, timeout: float) -> None:
        """Until every link listens (boot), or ``TimeoutError``."""
        async with asyncio.timeout(timeout):
            for link in self._links:
                await link.connected.wait()

    async def _link_for(self, channel: str) -> PubSubLink:
        index = self.shards.index_of(channel)
        client = self.shards.clients[index]
        if not isinstance(client, RedisCluster):
            return self._links[index]
        # Sharded PUB/SUB: the channel's PUB/SUB name lives on the master of its hash slot.
        await client.initialize()
        node = client.get_node_from_key(self.keys.publications(channel))
        if node is None:
            raise redis.ConnectionError(f"no Redis Cluster master for {channel!r}")
        address = (str(node.host), int(node.port))
        link = self._masters.get(address)
        if link is None:
            link = self._masters[address] = PubSubLink(
                self.shards.pubsub_client_at(index, *address),
                f"{self.keys.prefix}.keepalive",
                self._resubscribed,
                f"{self.label} redis {address[0]}:{address[1]}",
                sharded=True,
            )
            link.start()
        return link

    def _resubscribed(self, names: list[bytes]) -> None:
        prefix = self.keys.publications("").encode()[:-2]  # "P.client." before the tag
        channels = [name for name in names if name.startswith(prefix)]
        if self._events is not None and channels:
            on_resubscribed = getattr(self._events, "on_resubscribed", None)
            if on_resubscribed is not None:
                on_resubscribed(len(channels))

    def _publication_handler(self, channel: str) -> Handler:
        def handle(data: bytes) -> None:
            try:
                publication = decode_message(data)
            except MalformedMessage as exc:
                log.error("dropping a malformed publication of %s from Redis: %s", channel, exc)
                return
            assert self._events is not None
            self._events.on_publication(publication)

        return handle

    async def publish(self, publication: Publication) -> None:
        client = self.shards.for_name(publication.channel)
        name, message = self.keys.publications(publication.channel), encode_message(publication)
        if isinstance(client, RedisCluster):
            await client.spublish(name, message)
        else:
            await client.publish(name, message)

    async def subscribe(self, channel: str) -> None:
        name = self.keys.publications(channel)
        async with asyncio.timeout(self.subscribe_timeout):
            link = await self._link_for(channel)
            await link.subscribe(name, self._publication_handler(channel))

    async def unsubscribe(self, channel: str) -> None:
        link = await self._link_for(channel)
        await link.unsubscribe(self.keys.publications(channel))

    async def publish_control(self, data: bytes, node_id: str = "") -> None:
        name = self.keys.node(node_id) if node_id else self.keys.control
        await self.shards.control.publish(name, data)

    async def close(self) -> None:
        for link in [*self._links, *self._masters.values()]:
            await link.close()
