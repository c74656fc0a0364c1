"""The publication data plane: ZeroMQ PUB → SUB between shards, one topic per channel.

Theory of operation
-------------------
Every channel has one *writer* shard, ``crc32(channel) % N``. Every publication of a channel goes through
its writer, which sends it on its PUB socket (``ipc://<runtime_dir>/pub-K.ipc``); so all subscribers of a
channel, whichever shard they are on, see its publications in one order. Every shard has one SUB socket
connected to every shard's PUB, its own included, and subscribes to a channel's topic when its first
local subscriber joins; it unsubscribes after a grace period once the last one leaves, so that a client
reconnecting or resubscribing does not churn subscriptions. ZeroMQ filters at the PUB side, so a shard
only receives the channels it has subscribers for.

Topics are the UTF-8 channel name followed by ``\\x00``: ZeroMQ topics are prefix matches, and without the
terminator a subscriber of ``chat:1`` would also receive ``chat:10``. Every SUBSCRIBE is a message bound
by the SUB socket's send high-water mark, so SNDHWM is 0 (unlimited): otherwise the 1001st subscription
is silently lost.

A publication travels as its frames (:meth:`broker.publication.Publication.to_frames`), so that payload
bytes are never re-encoded (no base64) between processes.

Subscribing is asynchronous in ZeroMQ: a publication sent right after a client's subscribe reply could
reach the writer's PUB before the shard's SUBSCRIBE does, and be lost for that client. So the writer's
socket is an XPUB that sees every SUBSCRIBE (``XPUB_VERBOSE``) and answers the ones for channels it
writes with a *welcome* message ``[topic, b"W"]`` on that topic. A shard replies to a subscribe (and
announces the join) only once the channel is *ready*: the welcome arrived, so everything the writer
publishes from then on reaches it; what arrives before the welcome is dropped, since no local
subscriber has been told yet that it is subscribed. If the writer does not answer (it is down),
waiters are released after ``READY_TIMEOUT`` anyway. When a writer restarts, the shards subscribe its
channels again (:meth:`Subscriber.rearm`) and wait for the new welcome before it may publish (see
:meth:`shards.restarts.PeerRestarts.restarted`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import orjson
import zmq

from broker.ipc.zmqloop import SocketReader
from broker.publication import Publication, topic

log = logging.getLogger("switchboard.pubsub")

UNSUBSCRIBE_GRACE = 5.0
READY_TIMEOUT = 1.0
WELCOME = b"W"
# ``[topic, CHECK]``: publications of the channel may have been lost on their way to this node (its
# Redis subscription was down); subscribers check their positions against the stream.
CHECK = b"C"
_RECEIVE_HWM = 200_000
_SEND_HWM = 200_000


class ChannelSource(Protocol):
    """Where a writer's publications come from when they cross nodes (the Redis engine): told when a
    shard of this node wants a channel (``welcome`` once publications will arrive) and when none does."""

    def wanted(self, channel: str, welcome: Callable[[], None]) -> None: ...

    def released(self, channel: str) -> None: ...


class Publisher(SocketReader):
    """A writer shard's XPUB socket; it welcomes subscriptions to the channels it writes."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        is_writer: Callable[[str], bool],
        source: ChannelSource | None = None,
    ) -> None:
        self._is_writer = is_writer
        self._source = source
        sock = context.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, _SEND_HWM)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        super().__init__(loop, sock)

    def publish(self, publication: Publication) -> bool:
        try:
            self._sock.send_multipart(publication.to_frames(), zmq.NOBLOCK)
        except zmq.Again:
            log.error("publication queue full; dropped a publication to %s", publication.channel)
            return False
        finally:
            self._kick()
        return True

    def check(self, channel: str) -> None:
        """Ask the subscribers of ``channel`` to check their positions (see :data:`CHECK`)."""
        self._send_marker(topic(channel), CHECK)

    def _on_frames(self, frames: list[bytes]) -> None:
        message = frames[0]
        if message[:1] not in (b"\x00", b"\x01") or not message.endswith(b"\x00"):
            return  # not one of our topics
        topic_bytes = message[1:]
        try:
            channel = topic_bytes[:-1].decode("utf-8")
        except UnicodeDecodeError:
            return
        if not self._is_writer(channel):
            return
        source = self._source
        if message[0] == 0:
            # The last shard of this node subscribed to the channel left it.
            if source is not None:
                source.released(channel)
        elif source is None:
            self._send_marker(topic_bytes, WELCOME)
        else:
            source.wanted(channel, lambda: self._send_marker(topic_bytes, WELCOME))

    def _send_marker(self, topic_bytes: bytes, marker: bytes) -> None:
        try:
            self._sock.send_multipart([topic_bytes, marker], zmq.NOBLOCK)
        except zmq.Again:
            log.error("publication queue full; no %r marker for %r", marker, topic_bytes)
        finally:
            self._kick()

    def close(self) -> None:
        self._close_socket()


Deliver = Callable[[Publication], None]


class Subscriber(SocketReader):
    """A shard's SUB socket, subscribed to the channels that have local subscribers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoints: list[str],
        deliver: Deliver,
        grace: float = UNSUBSCRIBE_GRACE,
        on_check: Callable[[str], None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._on_check = on_check
        self._grace = grace
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        for endpoint in endpoints:
            sock.connect(endpoint)
        self._subscribed: set[str] = set()
        self._ready: set[str] = set()
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self._pending_unsubscribe: dict[str, asyncio.TimerHandle] = {}
        super().__init__(loop, sock)

    @property
    def channels(self) -> set[str]:
        return self._subscribed

    def subscribe(self, channel: str) -> None:
        timer = self._pending_unsubscribe.pop(channel, None)
        if timer is not None:
            timer.cancel()
        if channel not in self._subscribed:
            self._subscribed.add(channel)
            self._sock.setsockopt(zmq.SUBSCRIBE, topic(channel))
            self._kick()

    def when_ready(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once publications of ``channel`` are sure to reach this subscriber."""
        if channel in self._ready:
            callback()
            return
        waiters = self._waiters.get(channel)
        if waiters is None:
            self._waiters[channel] = [callback]
            self._loop.call_later(READY_TIMEOUT, self._give_up_waiting, channel)
        else:
            waiters.append(callback)

    def rearm(self, channels: set[str]) -> None:
        """A writer restarted: subscribe its channels anew so that its new PUB welcomes them again.

        The SUB socket resends its subscriptions when it reconnects, but nothing tells when; until the
        new welcome arrives the channels are not ready, and :meth:`when_ready` waits again. The other
        writers never publish these topics, so unsubscribing them there for a moment loses nothing.
        """
        for channel in channels & self._subscribed:
            self._ready.discard(channel)
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic(channel))
            self._sock.setsockopt(zmq.SUBSCRIBE, topic(channel))
        self._kick()

    def _give_up_waiting(self, channel: str) -> None:
        if channel in self._waiters:
            log.warning("no welcome from the writer of %s; going on without it", channel)
            if channel in self._subscribed:
                self._ready.add(channel)
            self._release_waiters(channel)

    def _release_waiters(self, channel: str) -> None:
        for callback in self._waiters.pop(channel, ()):
            try:
                callback()
            except Exception:
                log.exception("subscription callback for %s failed", channel)

    def release(self, channel: str) -> None:
        """The last local subscriber left: unsubscribe after the grace period unless one comes back."""
        if channel in self._subscribed and channel not in self._pending_unsubscribe:
            self._pending_unsubscribe[channel] = self._loop.call_later(
                self._grace, self._unsubscribe, channel
            )

    def _unsubscribe(self, channel: str) -> None:
        self._pending_unsubscribe.pop(channel, None)
        if channel in self._subscribed:
            self._subscribed.discard(channel)
            self._ready.discard(channel)
            self._sock.setsockopt(zmq.UNSUBSCRIBE, topic(channel))
            self._kick()

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) == 2 and frames[1] == WELCOME:
            channel = frames[0][:-1].decode("utf-8", "replace")
            if channel in self._subscribed:
                self._ready.add(channel)
                self._release_waiters(channel)
            return
        if len(frames) == 2 and frames[1] == CHECK:
            if self._on_check is not None:
                self._on_check(frames[0][:-1].decode("utf-8", "replace"))
            return
        try:
            publication = Publication.from_frames(frames)
        except (ValueError, KeyError, orjson.JSONDecodeError) as exc:
            log.error("dropping a malformed publication: %s", exc)
            return
        if publication.channel not in self._ready:
            # Sent before the welcome: nobody here was told yet that it subscribed (with the Redis
            # engine, Redis may deliver before the writer saw its subscription confirmed).
            return
        try:
            self._deliver(publication)
        except Exception:
            log.exception("delivering a publication to %s failed", publication.channel)

    def close(self) -> None:
        for timer in self._pending_unsubscribe.values():
            timer.cancel()
        self._pending_unsubscribe.clear()
        self._close_socket()
