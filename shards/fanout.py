"""Fan-out on a shard: publications and join/leave announcements to local subscribers, in stream order.

A publication reaching a shard is encoded once per connection kind (see :mod:`shards.encoding`) and the
same bytes are queued on every local subscriber; nothing here awaits a client. Positioned subscriptions
(history channels) are kept in stream order: while a subscribe is waiting for its position or recovery
the live publications are held for it, and a publication that does not follow the last one delivered
(or a periodic check that finds the subscriber behind its stream) ends the subscription with 2500 —
3010 for a server-side one — so that the client recovers. When a writer restarts with empty streams,
the positioned subscriptions of its channels are ended the same way before it publishes in its new
epochs (:meth:`FanOut.cut_positioned`, called from :mod:`shards.restarts`).

Bytes queued on a connection are written once per loop iteration by :class:`WriteCoalescer`, so that a
burst of publications to one client costs one ``write``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson

from broker import errors
from broker.channels import ChannelRules
from broker.delta import bodies as delta_bodies
from broker.errors import ClientError
from broker.metrics.counters import ShardCounters
from broker.protocol.state import SERVER_SIDE_SOURCES
from broker.publication import Publication, publication_body
from shards.connection import ClientConnection
from shards.encoding import ENCODERS, JSON_KINDS, publication_push
from shards.hub import Hub

log = logging.getLogger("switchboard.shard")

# Publications that left the writer before it reported its top may still be on their way.
POSITION_CHECK_GRACE = 2.0
# How often positioned subscribers are checked against their stream's top (Centrifugo: 40 s).
POSITION_CHECK_INTERVAL = 40.0


class FanOutHost(Protocol):
    """What fan-out needs of its shard: to publish join/leave, ask a writer, end a subscription."""

    def publish(self, publication: Publication, done: Any) -> None: ...

    def writer_query(self, channel: str, method: str, params: dict[str, Any], done: Any) -> None: ...

    def server_unsubscribe(self, conn: ClientConnection, channel: str, code: int, reason: str) -> None: ...


class WriteCoalescer:
    """Connections with queued bytes, flushed once per loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._dirty: list[ClientConnection] = []
        self._scheduled = False

    def mark_dirty(self, conn: ClientConnection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class FanOut:
    """Delivery of publications and join/leave events to this shard's subscribers."""

    def __init__(self, hub: Hub, rules: ChannelRules, host: FanOutHost, counters: ShardCounters) -> None:
        self.hub = hub
        self.rules = rules
        self.host = host
        self.counters = counters
        self._next_position_check = time.time() + POSITION_CHECK_INTERVAL
        # Channels with delta subscribers here: (sequence number, data) of the last publication fanned
        # out, the base of the next one's delta.
        self._delta_last: dict[str, tuple[int, bytes]] = {}

    def deliver(self, publication: Publication) -> None:
        """Fan a publication (or a join / leave) out to this shard's subscribers of its channel."""
        channel = publication.channel
        self.counters.broker_message_received(publication.kind or "publication")
        members = self.hub.by_channel.get(channel)
        if not members:
            self._delta_last.pop(channel, None)
            return
        if publication.kind:
            self._deliver_presence_event(publication, members)
            return
        frames = _Frames(publication, self._delta_last.get(channel))
        for conn in list(members):
            assert isinstance(conn, ClientConnection)
            state = conn.state
            ordered = state.recovering is None and state.positions is None
            if not ordered and not self._in_stream_order(conn, publication):
                continue
            frame = frames.for_connection(conn)
            if frame is None:
                conn.close_with(errors.INAPPROPRIATE_PROTOCOL)
                continue
            conn.enqueue(frame)
        if frames.delta_subscribers:
            self._delta_last[channel] = (frames.seq, publication.data)
        else:
            self._delta_last.pop(channel, None)

    def channel_gone(self, channel: str) -> None:
        """The shard's last subscriber of ``channel`` left: its delta base goes too."""
        self._delta_last.pop(channel, None)

    def _in_stream_order(self, conn: ClientConnection, publication: Publication) -> bool:
        """For positioned subscriptions: hold publications during a subscribe, detect gaps after it."""
        state = conn.state
        channel = publication.channel
        if state.recovering is not None and channel in state.recovering:
            state.recovering[channel].append(publication)
            return False
        positions = state.positions
        if positions is None or channel not in positions or not publication.offset:
            return True
        last, epoch = positions[channel]
        if publication.epoch == epoch and publication.offset == last + 1:
            positions[channel] = (publication.offset, epoch)
            return True
        if publication.epoch == epoch and publication.offset <= last:
            return False  # already delivered (recovered)
        log.info("client %s missed publications in %s: insufficient state", state.client, channel)
        self.insufficient_state(conn, channel)
        return False

    def insufficient_state(self, conn: ClientConnection, channel: str) -> None:
        """End a positioned subscription so that the client recovers: 2500, or 3010 when server-side."""
        if conn.state.channels.get(channel) in SERVER_SIDE_SOURCES:
            conn.close_with(errors.INSUFFICIENT_STATE)
        else:
            self.host.server_unsubscribe(conn, channel, 2500, "insufficient state")

    def cut_positioned(self, channels: set[str], boot: str) -> list[tuple[ClientConnection, str]]:
        """A writer lost its streams: end every positioned subscription of ``channels`` it writes.

        Returns the client-side subscriptions ended (their SDKs subscribe again by themselves); the
        non-positioned subscriptions of these channels are left as they are, and so are the ones the
        writer's new life (``boot``) positioned already: its announcement may reach this shard after
        clients subscribed through it (at a server's start, where the shards boot side by side).
        """
        ended: list[tuple[ClientConnection, str]] = []
        for channel in channels:
            for conn in list(self.hub.by_channel.get(channel, ())):
                assert isinstance(conn, ClientConnection)
                positions = conn.state.positions
                if conn.closed or positions is None or channel not in positions:
                    continue
                boots = conn.state.position_boots
                if boot and boots is not None and boots.get(channel) == boot:
                    continue
                if conn.state.channels.get(channel) not in SERVER_SIDE_SOURCES:
                    ended.append((conn, channel))
                self.insufficient_state(conn, channel)
        if ended:
            log.info("ended %d positioned subscriptions of a restarted writer's channels", len(ended))
        return ended

    @staticmethod
    def resubscribed(conn: ClientConnection, channel: str) -> bool:
        """The client subscribed again to a channel whose subscription was ended (or went away)."""
        state = conn.state
        if conn.closed:
            return True
        if channel not in state.channels or state.positions is None or channel not in state.positions:
            return False
        return state.recovering is None or channel not in state.recovering

    def position_check_due(self, now: float) -> bool:
        """Once every ``POSITION_CHECK_INTERVAL``: time for :meth:`check_positions`."""
        if now < self._next_position_check:
            return False
        self._next_position_check = now + POSITION_CHECK_INTERVAL
        return True

    async def check_positions(self, only: set[str] | None = None) -> None:
        """Positioned subscribers must not trail their stream: a lost last publication shows only here.

        For each channel with positioned subscribers, ask its writer for the top, wait for anything
        already on its way, then cut the subscriptions still behind (or in an old epoch). One that was
        positioned anew meanwhile (in another epoch: its writer restarted and it resubscribed) is left
        to the next check: the top read before is of no use for it.
        """
        by_channel: dict[str, list[tuple[ClientConnection, str]]] = {}
        for conn in self.hub.by_client.values():
            positions = conn.state.positions
            if positions:
                assert isinstance(conn, ClientConnection)
                for channel, (_, epoch) in positions.items():
                    if only is None or channel in only:
                        by_channel.setdefault(channel, []).append((conn, epoch))
        tops: dict[str, dict[str, Any]] = {}
        for channel in by_channel:
            self.host.writer_query(
                channel,
                "position",
                {"channel": channel},
                lambda err, top, ch=channel: tops.__setitem__(ch, top or {}),
            )
        await asyncio.sleep(POSITION_CHECK_GRACE)
        for channel, conns in by_channel.items():
            top = tops.get(channel)
            if not top:
                continue
            top_offset, top_epoch = int(top.get("offset", 0)), str(top.get("epoch", ""))
            for conn, epoch_then in conns:
                position = conn.state.positions.get(channel) if conn.state.positions else None
                if position is None or conn.closed or position[1] != epoch_then:
                    continue
                if position[1] != top_epoch or position[0] < top_offset:
                    log.info("client %s is behind in %s: insufficient state", conn.state.client, channel)
                    self.insufficient_state(conn, channel)

    def _deliver_presence_event(self, event: Publication, members: set[Any]) -> None:
        """Join / leave pushes go to subscribers that asked for them, or to all when forced."""
        try:
            options = self.rules.options_for(event.channel)
        except ClientError:
            return
        forced = options.force_push_join_leave
        body = {"channel": event.channel, event.kind: {"info": event.client_info() or {}}}
        encoded: dict[str, bytes] = {}
        for conn in list(members):
            assert isinstance(conn, ClientConnection)
            wanted = conn.state.join_leave
            if not forced and (wanted is None or event.channel not in wanted):
                continue
            frame = encoded.get(conn.kind)
            if frame is None:
                frame = encoded[conn.kind] = ENCODERS[conn.kind](body)
            conn.enqueue(frame)

    def presence_event(self, conn: ClientConnection, channel: str, kind: str) -> None:
        """Announce a subscriber joining or leaving a join_leave channel, through its writer (one order)."""
        try:
            if not self.rules.options_for(channel).join_leave:
                return
        except ClientError:
            return
        state = conn.state
        chan_info = state.chan_info.get(channel, b"") if state.chan_info else b""
        event = Publication(
            channel,
            b"",
            user=state.user,
            client=state.client,
            conn_info=state.info or b"",
            chan_info=chan_info,
            kind=kind,
        )
        self.host.publish(event, _ignore_result)


class _Frames:
    """One publication's frames, encoded once per connection kind (and per delta form) as needed."""

    __slots__ = ("_encoded", "_json_ok", "_last", "_patch", "delta_subscribers", "publication", "seq")

    def __init__(self, publication: Publication, last: tuple[int, bytes] | None) -> None:
        self.publication = publication
        self._last = last
        self.seq = last[0] + 1 if last is not None else 1  # this publication's number for delta bases
        self._encoded: dict[tuple[str, int], bytes] = {}
        self._json_ok: bool | None = None
        self._patch: bytes | bool | None = False  # False: not computed yet; None: send in full
        self.delta_subscribers = False

    def for_connection(self, conn: ClientConnection) -> bytes | None:
        """The frame for ``conn``; None when it speaks JSON and the data is not JSON (it must go)."""
        kind = conn.kind
        if kind in JSON_KINDS:
            if self._json_ok is None:
                self._json_ok = _is_json(self.publication.data)
            if not self._json_ok:
                return None
        deltas = conn.state.delta
        form = 0  # 0: plain, 1: full payload in delta form, 2: delta against the previous publication
        if deltas is not None:
            base = deltas.get(self.publication.channel)
            if base is not None:
                self.delta_subscribers = True
                form = 2 if self._last is not None and base == self._last[0] and self._delta() else 1
                if base != delta_bodies.PENDING:
                    deltas[self.publication.channel] = self.seq
        frame = self._encoded.get((kind, form))
        if frame is None:
            frame = self._encoded[(kind, form)] = ENCODERS[kind](self._body(kind, form))
        return frame

    def _delta(self) -> bool:
        if self._patch is False:
            assert self._last is not None
            use = self.publication.delta
            self._patch = delta_bodies.patch(self._last[1], self.publication.data) if use else None
        return self._patch is not None

    def _body(self, kind: str, form: int) -> dict[str, Any]:
        body = publication_body(self.publication)
        binary = kind not in JSON_KINDS
        if form == 1:
            body = delta_bodies.full_body(body, binary)
        elif form == 2:
            assert isinstance(self._patch, bytes)
            body = delta_bodies.patch_body(body, self._patch, binary)
        return publication_push(self.publication.channel, body)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _ignore_result(err: ClientError | None, result: dict[str, Any] | None) -> None:
    if err is not None:
        log.warning("join/leave announcement failed: %s", err.message)
