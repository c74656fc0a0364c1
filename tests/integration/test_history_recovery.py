"""History, positioning and recovery across shards, from the API and from raw WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest
from websockets.exceptions import WebSocketException

from broker.hashing import shard_for_user, writer_for
from tests.integration.streamclient import StreamClient
from tests.integration.test_presence_and_channels import Ws, connect
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import eventually_async

NAMESPACES = [
    {
        "name": "hist",
        "history_size": 100,
        "history_ttl": "300s",
        "allow_subscribe_for_client": True,
        "allow_history_for_subscriber": True,
        "allow_recovery": True,
        "allow_publish_for_subscriber": True,
    },
    {"name": "plain", "allow_subscribe_for_client": True},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    extra = {"namespaces": NAMESPACES, "allow_subscribe_for_client": True}
    with Server(tmp_path_factory.mktemp("history"), shards=2, **extra) as srv:
        yield srv


def test_publish_offsets_and_api_history(server: Server) -> None:
    results = [
        server.api("publish", {"channel": "hist:api", "data": {"n": i}})["result"] for i in range(1, 6)
    ]
    epoch = results[0]["epoch"]
    assert [r["offset"] for r in results] == [1, 2, 3, 4, 5]
    assert {r["epoch"] for r in results} == {epoch} and len(epoch) == 8
    full = server.api("history", {"channel": "hist:api", "limit": -1})["result"]
    assert [p["data"]["n"] for p in full["publications"]] == [1, 2, 3, 4, 5]
    assert [p["offset"] for p in full["publications"]] == [1, 2, 3, 4, 5]
    assert (full["offset"], full["epoch"]) == (5, epoch)
    top = server.api("history", {"channel": "hist:api"})["result"]
    assert top == {"publications": [], "epoch": epoch, "offset": 5}
    since = server.api("history", {"channel": "hist:api", "limit": 2, "since": {"offset": 2, "epoch": epoch}})
    assert [p["offset"] for p in since["result"]["publications"]] == [3, 4]
    backwards = server.api("history", {"channel": "hist:api", "limit": 2, "reverse": True})["result"]
    assert [p["offset"] for p in backwards["publications"]] == [5, 4]
    mismatch = server.api(
        "history", {"channel": "hist:api", "limit": 1, "since": {"offset": 1, "epoch": "other"}}
    )
    assert mismatch["error"]["code"] == 112
    assert server.api("history", {"channel": "plain:x"})["error"]["code"] == 108
    assert server.api("history", {"channel": "nope:x"})["error"]["code"] == 102
    assert server.api("history_remove", {"channel": "hist:api"}) == {"result": {}}
    after = server.api("history", {"channel": "hist:api", "limit": -1})["result"]
    assert after == {"publications": [], "epoch": epoch, "offset": 5}
    assert server.api("publish", {"channel": "hist:api", "data": {}})["result"]["offset"] == 6


def test_idempotency_and_skip_history(server: Server) -> None:
    first = server.api("publish", {"channel": "hist:idem", "data": {"a": 1}, "idempotency_key": "k1"})[
        "result"
    ]
    again = server.api("publish", {"channel": "hist:idem", "data": {"a": 1}, "idempotency_key": "k1"})[
        "result"
    ]
    assert first == again
    skipped = server.api("publish", {"channel": "hist:idem", "data": {"a": 2}, "skip_history": True})[
        "result"
    ]
    assert skipped == {}
    stored = server.api("history", {"channel": "hist:idem", "limit": -1})["result"]["publications"]
    assert [p["data"] for p in stored] == [{"a": 1}]
    plain = server.api("publish", {"channel": "plain:x", "data": {"a": 1}})
    assert plain == {"result": {}}


async def _subscribe(client: Ws, channel: str, **options: Any) -> dict[str, Any]:
    reply = await client.call(subscribe={"channel": channel, **options})
    assert "subscribe" in reply, reply
    return reply["subscribe"]


def test_client_history_matches_api(server: Server) -> None:
    async def scenario() -> None:
        for i in range(3):
            server.api("publish", {"channel": "hist:same", "data": {"i": i}})
        client = await connect(server, "historian")
        await _subscribe(client, "hist:same")
        reply = await client.call(history={"channel": "hist:same", "limit": 10})
        api = server.api("history", {"channel": "hist:same", "limit": 10})["result"]
        assert reply["history"] == api
        not_subscribed = await client.call(history={"channel": "hist:other", "limit": 1})
        assert not_subscribed["error"]["code"] == 103
        await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_recovery_after_reconnect(server: Server) -> None:
    async def scenario() -> None:
        client = await connect(server, "recoverer")
        first = await _subscribe(client, "hist:rec", recoverable=True)
        assert first["recoverable"] is True and first["positioned"] is True
        epoch, offset = first["epoch"], first.get("offset", 0)
        server.api("publish", {"channel": "hist:rec", "data": {"n": 0}})
        live = await client.push()
        assert live["pub"]["offset"] == offset + 1
        offset += 1
        await client.close()
        for n in range(1, 51):
            server.api("publish", {"channel": "hist:rec", "data": {"n": n}})
        again = await connect(server, "recoverer")
        result = await _subscribe(
            again, "hist:rec", recoverable=True, recover=True, offset=offset, epoch=epoch
        )
        assert result["recovered"] is True and result["was_recovering"] is True
        assert [p["data"]["n"] for p in result["publications"]] == list(range(1, 51))
        assert [p["offset"] for p in result["publications"]] == list(range(offset + 1, offset + 51))
        server.api("publish", {"channel": "hist:rec", "data": {"n": 51}})
        assert (await again.push())["pub"]["offset"] == offset + 51
        wrong_epoch = await connect(server, "recoverer")
        lost = await _subscribe(
            wrong_epoch, "hist:rec", recoverable=True, recover=True, offset=3, epoch="zzz"
        )
        assert lost.get("recovered") is not True and "publications" not in lost
        assert lost["offset"] == offset + 51
        await again.close()
        await wrong_epoch.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_recovery_across_a_shard_restart(server: Server) -> None:
    """The client's shard dies; the channel's writer (another shard) keeps the stream."""
    channel = next(f"hist:far-{i}" for i in range(1000) if writer_for(f"hist:far-{i}", 2) == 1)
    user = next(f"victim-{i}" for i in range(1000) if shard_for_user(f"victim-{i}", 2) == 0)

    async def scenario() -> None:
        client = await connect(server, user)
        first = await _subscribe(client, channel, recoverable=True)
        epoch, offset = first["epoch"], first.get("offset", 0)
        os.kill(server.shard_pids()[0], signal.SIGKILL)
        for n in range(50):
            server.api("publish", {"channel": channel, "data": {"n": n}})
        with contextlib.suppress(Exception):
            await client.reader  # the stream ends with the process
        again = await eventually_async(
            lambda: connect(server, user),
            timeout=20,
            interval=0.2,
            what="a connection to the restarted shard",
            retry_on=(AssertionError, OSError, TimeoutError, WebSocketException),
        )
        result = await _subscribe(again, channel, recoverable=True, recover=True, offset=offset, epoch=epoch)
        assert result["recovered"] is True
        assert [p["data"]["n"] for p in result["publications"]] == list(range(50))
        await again.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_uni_stream_recovers_through_connect_request_subs(server: Server) -> None:
    first = server.api("publish", {"channel": "hist:uni", "data": {"n": 0}})["result"]
    epoch, offset = first["epoch"], first["offset"]
    for n in range(1, 11):
        server.api("publish", {"channel": "hist:uni", "data": {"n": n}})
    body = {
        "token": make_token("uni-user"),
        "subs": {"hist:uni": {"recover": True, "offset": offset, "epoch": epoch}},
    }
    client = StreamClient(server.port, body)
    connect = client.connect()
    sub = connect["subs"]["hist:uni"]
    assert sub["recovered"] is True and sub["was_recovering"] is True and sub["epoch"] == epoch
    recovered = [client.read_until("pub") for _ in range(10)]
    assert [m["pub"]["data"]["n"] for m in recovered] == list(range(1, 11))
    assert all(m["channel"] == "hist:uni" for m in recovered)
    server.api("publish", {"channel": "hist:uni", "data": {"n": 11}})
    live = client.read_until("pub")
    assert live["pub"]["data"]["n"] == 11 and live["pub"]["offset"] == offset + 11
    client.close()
