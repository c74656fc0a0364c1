"""A shard's per-connection bookkeeping (hub, ping wheel, expiry deadlines) after connections close.

The shard is built in-process without starting it (no sockets, no ZeroMQ): WebSocket connections are
driven through their real session core, then lost as when the peer goes away. Everything a connection
added must be gone with it, whatever its token's expiry.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from broker.auth import encode_token
from broker.config import build
from broker.ids import new_id
from broker.lifecycle import standalone_context
from broker.protocol.codec import get_codec
from broker.protocol.state import ConnectionState
from shards.main import Shard
from shards.ws import WsConnection

SECRET = "timers-secret"


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[Shard]:
    cfg = build(
        {
            "token_hmac_secret_key": SECRET,
            "allow_subscribe_for_client": True,
            "shm_index": False,
            "runtime_dir": str(tmp_path / "run"),
            "shards": 1,
        },
        environ={},
    )
    loop = asyncio.new_event_loop()
    try:
        yield Shard(cfg, 0, standalone_context("shard-0"), loop)
    finally:
        loop.close()


def connect(shard: Shard, k: int) -> WsConnection:
    now = time.time()
    state = ConnectionState(new_id(), new_id(), "websocket", "json", now)
    conn = WsConnection(shard, state, get_codec("json"), b"")
    expires = int(now) + 3600
    connect = {"id": 1, "connect": {"token": encode_token({"sub": f"u{k % 7}", "exp": expires}, SECRET)}}
    sub_token = encode_token({"sub": f"u{k % 7}", "channel": f"$c{k % 3}", "exp": expires + k}, SECRET)
    commands = [
        connect,
        {"id": 2, "subscribe": {"channel": f"room-{k % 5}"}},
        {"id": 3, "subscribe": {"channel": f"$c{k % 3}", "token": sub_token}},
    ]
    conn.session.receive(b"\n".join(orjson.dumps(c) for c in commands), now)
    # The replies went to the connection's output queue; what matters here is what the shard holds.
    assert conn.session.disconnect is None
    assert set(state.channels) == {f"room-{k % 5}", f"$c{k % 3}"}
    assert state.sub_expires == {f"$c{k % 3}": expires + k}
    return conn


def test_closed_connections_leave_nothing_behind(shard: Shard) -> None:
    live = [connect(shard, k) for k in range(20)]
    assert len(shard.hub) == 20 and len(shard.timers.expiry) == 20 and len(shard.timers.sub_expiry) == 20
    for k in range(20, 2_000):
        connect(shard, k).connection_lost(None)
    while live:
        live.pop().connection_lost(None)
    assert len(shard.hub) == 0
    assert shard.hub.by_user == {} and shard.hub.by_channel == {}
    assert len(shard.timers.pings) == 0
    assert (shard.timers.expiry.held, shard.timers.sub_expiry.held) == (0, 0)
    shard.coalescer.flush()  # what the running loop does after each read
    gc.collect()
    assert sum(type(o) is WsConnection for o in gc.get_objects()) == 0


def test_unsubscribing_drops_the_subscription_deadline(shard: Shard) -> None:
    conn = connect(shard, 1)
    conn.session.receive(orjson.dumps({"id": 4, "unsubscribe": {"channel": "$c1"}}), time.time())
    assert len(shard.timers.sub_expiry) == 0 and shard.timers.sub_expiry.held == 0
    assert len(shard.timers.expiry) == 1
    conn.connection_lost(None)
    assert shard.timers.expiry.held == 0
