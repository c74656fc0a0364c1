"""Fan-out without sockets: real connections on fake transports, a fake shard for what fan-out asks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson

from broker import errors
from broker.channels import ChannelRules
from broker.config import build
from broker.delta.fossil import apply
from broker.metrics.counters import ShardCounters
from broker.protocol.state import ConnectionState
from broker.publication import Publication
from shards.connection import ClientConnection
from shards.fanout import FanOut, WriteCoalescer
from shards.hub import Hub


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


class Conn(ClientConnection):
    """A connection whose queue is watched: what it was given, and how it was told to go."""

    def __init__(self, shard: Any, client: str, kind: str) -> None:
        super().__init__(shard, ConnectionState(client, "s", "websocket", "json", 0.0), kind)
        self.transport = Transport()  # type: ignore[assignment]
        self.queued: list[bytes] = []
        self.closed_with: Any = None

    def enqueue(self, data: bytes) -> None:
        self.queued.append(data)
        super().enqueue(data)

    def farewell(self, disconnect: Any) -> bytes:
        self.closed_with = disconnect
        return b"bye"

    def flush_before_close(self) -> None:
        self.flush()


def setup(queue_limit: int = 1_000_000) -> tuple[FanOut, Hub, Any, asyncio.AbstractEventLoop]:
    cfg = build({"token_hmac_secret_key": "x", "client_queue_max_size": queue_limit}, environ={})
    loop = asyncio.new_event_loop()
    hub = Hub()
    coalescer = WriteCoalescer(loop)
    shard = SimpleNamespace(
        cfg=cfg,
        loop=loop,
        mark_dirty=coalescer.mark_dirty,
        unregister=hub.remove,
        published=[],
        counters=ShardCounters(),
        backlogged=lambda conn: None,
    )
    shard.publish = lambda publication, done: shard.published.append(publication)
    fanout = FanOut(hub, ChannelRules.from_config(cfg), shard, shard.counters)  # type: ignore[arg-type]
    return fanout, hub, shard, loop


def subscribe(hub: Hub, shard: Any, client: str, kind: str, channel: str = "news") -> Conn:
    conn = Conn(shard, client, kind)
    hub.add(conn)
    hub.subscribe(conn, channel, 0)
    return conn


def test_a_publication_is_encoded_once_per_kind_and_the_same_bytes_go_to_everyone():
    fanout, hub, shard, loop = setup()
    try:
        json_conns = [subscribe(hub, shard, f"j{i}", "ws-json") for i in range(5)]
        proto_conns = [subscribe(hub, shard, f"p{i}", "ws-protobuf") for i in range(5)]
        subscribe(hub, shard, "other", "ws-json", channel="elsewhere")
        fanout.deliver(Publication("news", b'{"n":1}'))
        json_frames = [conn.queued[0] for conn in json_conns]
        proto_frames = [conn.queued[0] for conn in proto_conns]
        assert all(frame is json_frames[0] for frame in json_frames)
        assert all(frame is proto_frames[0] for frame in proto_frames)
        assert json_frames[0] != proto_frames[0] and b'{"n":1}' in json_frames[0]
        assert hub.by_client["other"].queued == []  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_queued_bytes_are_written_once_per_loop_iteration():
    fanout, hub, shard, loop = setup()
    try:
        conn = subscribe(hub, shard, "a", "ws-json")
        for n in range(3):
            fanout.deliver(Publication("news", b"%d" % n))
        assert conn.transport.written == []  # type: ignore[union-attr]
        loop.run_until_complete(asyncio.sleep(0))
        assert len(conn.transport.written) == 1  # type: ignore[union-attr]
    finally:
        loop.close()


def test_a_client_that_does_not_read_is_cut_with_3008_and_the_others_are_not():
    fanout, hub, shard, loop = setup(queue_limit=100)
    try:
        slow = subscribe(hub, shard, "slow", "ws-json")
        fast = subscribe(hub, shard, "fast", "ws-json")
        fanout.deliver(Publication("news", b'"' + b"x" * 200 + b'"'))
        assert slow.closed_with is errors.SLOW and fast.closed_with is errors.SLOW
        hub_after = set(hub.by_client)
        assert hub_after == set()
        slow2 = subscribe(hub, shard, "slow2", "ws-json")
        fast2 = subscribe(hub, shard, "fast2", "ws-json")
        slow2.enqueue(b"y" * 90)  # a client already behind
        fanout.deliver(Publication("news", b'"small"'))
        assert slow2.closed_with is errors.SLOW and fast2.closed_with is None
        assert "fast2" in hub.by_client and "slow2" not in hub.by_client
    finally:
        loop.close()


def test_binary_data_ends_json_clients_with_3506_and_reaches_protobuf_ones():
    fanout, hub, shard, loop = setup()
    try:
        json_conn = subscribe(hub, shard, "j", "ws-json")
        proto_conn = subscribe(hub, shard, "p", "ws-protobuf")
        fanout.deliver(Publication("news", b"\xff\x00"))
        assert json_conn.closed_with is errors.INAPPROPRIATE_PROTOCOL
        assert proto_conn.queued and proto_conn.closed_with is None
    finally:
        loop.close()


def test_positioned_subscribers_get_publications_in_order_and_a_gap_ends_the_subscription():
    fanout, hub, shard, loop = setup()
    ended: list[tuple[str, str, int]] = []
    shard.server_unsubscribe = lambda conn, channel, code, reason: ended.append(
        (conn.state.client, channel, code)
    )
    try:
        conn = subscribe(hub, shard, "a", "ws-json")
        conn.state.positions = {"news": (1, "e")}
        fanout.deliver(Publication("news", b"2", offset=2, epoch="e"))
        fanout.deliver(Publication("news", b"2", offset=2, epoch="e"))  # already delivered
        assert len(conn.queued) == 1 and conn.state.positions["news"] == (2, "e")
        fanout.deliver(Publication("news", b"4", offset=4, epoch="e"))
        assert ended == [("a", "news", 2500)] and len(conn.queued) == 1
    finally:
        loop.close()


def test_a_restarted_writer_ends_the_subscriptions_its_old_life_positioned_and_only_those():
    fanout, hub, shard, loop = setup()
    ended: list[tuple[str, int]] = []
    shard.server_unsubscribe = lambda conn, channel, code, reason: ended.append((conn.state.client, code))
    try:
        old, new, _plain = (subscribe(hub, shard, client, "ws-json") for client in ("old", "new", "plain"))
        old.state.positions = {"news": (3, "e1")}
        old.state.position_boots = {"news": "boot-1"}
        new.state.positions = {"news": (0, "e2")}
        new.state.position_boots = {"news": "boot-2"}  # positioned by the new life already
        cut = fanout.cut_positioned({"news"}, "boot-2")
        assert [conn.state.client for conn, _ in cut] == ["old"]
        assert ended == [("old", 2500)]
    finally:
        loop.close()


def test_the_position_check_cuts_subscribers_behind_but_not_ones_positioned_anew_meanwhile(monkeypatch):
    import shards.fanout as fanout_module

    monkeypatch.setattr(fanout_module, "POSITION_CHECK_GRACE", 0.01)
    fanout, hub, shard, loop = setup()
    ended: list[tuple[str, int]] = []
    shard.server_unsubscribe = lambda conn, channel, code, reason: ended.append((conn.state.client, code))
    shard.writer_query = lambda channel, method, params, done: done(None, {"offset": 5, "epoch": "old"})
    try:
        behind, moved, current = (
            subscribe(hub, shard, client, "ws-json") for client in ("behind", "moved", "current")
        )
        behind.state.positions = {"news": (3, "old")}
        moved.state.positions = {"news": (3, "old")}
        current.state.positions = {"news": (5, "old")}

        async def scenario() -> None:
            check = asyncio.ensure_future(fanout.check_positions())
            await asyncio.sleep(0)
            moved.state.positions = {"news": (0, "new")}  # its writer restarted; it resubscribed
            await asyncio.wait_for(check, 2)

        loop.run_until_complete(scenario())
        assert ended == [("behind", 2500)]
    finally:
        loop.close()


def _pub(frame: bytes) -> dict[str, Any]:
    """The publication in a WebSocket text frame of the JSON protocol (the frame header comes first)."""
    pub: dict[str, Any] = orjson.loads(frame[frame.index(b"{") :])["push"]["pub"]
    return pub


def test_delta_is_computed_once_per_publication_and_follows_each_subscribers_base():
    fanout, hub, shard, loop = setup()
    try:
        early = [subscribe(hub, shard, f"d{i}", "ws-json") for i in range(3)]
        for conn in early:
            conn.state.delta = {"news": 0}  # subscribed with delta, no base yet
        plain = subscribe(hub, shard, "plain", "ws-json")
        doc = b'{"rows": [' + b",".join(b'{"id": %d, "v": "value %d"}' % (i, i) for i in range(50)) + b"]}"
        fanout.deliver(Publication("news", doc, delta=True))
        late = subscribe(hub, shard, "late", "ws-json")
        late.state.delta = {"news": 0}
        pending = subscribe(hub, shard, "pending", "ws-json")
        pending.state.delta = {"news": -1}  # its subscribe reply is not out yet
        edited = doc.replace(b"value 7", b"value 70")
        fanout.deliver(Publication("news", edited, delta=True))
        second = [_pub(conn.queued[1]) for conn in early]
        assert all(conn.queued[1] is early[0].queued[1] for conn in early)  # one delta, shared
        assert second[0]["delta"] is True and apply(doc, second[0]["data"].encode()) == edited
        assert _pub(late.queued[0]) == {"data": edited.decode()}  # no base yet: in full, as a string
        assert _pub(pending.queued[0]) == {"data": edited.decode()} and pending.state.delta == {"news": -1}
        assert late.state.delta == early[0].state.delta
        assert _pub(plain.queued[1])["data"] == orjson.loads(edited)
        # Not delta-capable: in full for everyone, and still the base of the next one.
        fanout.deliver(Publication("news", doc))
        assert _pub(late.queued[1]) == {"data": doc.decode()}
        fanout.deliver(Publication("news", edited, delta=True))
        assert _pub(late.queued[2])["delta"] is True
        # The last subscriber leaving drops what the channel kept.
        fanout.channel_gone("news")
        assert "news" not in fanout._delta_last
    finally:
        loop.close()
