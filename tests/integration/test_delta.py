"""Delta compression on the wire, with raw WebSocket clients: negotiation, the first publication in full,
deltas after it, what is not delta-capable, and the bytes saved on a 4 KB document with small edits."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from broker.delta.fossil import apply
from tests.integration.wsclient import WsClient, api, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import make_token

NAMESPACES = [
    {
        "name": "doc",
        "allow_subscribe_for_client": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
        "history_size": 200,
        "history_ttl": "300s",
        "allow_recovery": True,
    },
    {"name": "opt", "allow_subscribe_for_client": True, "allowed_delta_types": ["fossil"]},
    {"name": "nodelta", "allow_subscribe_for_client": True},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with Server(tmp_path_factory.mktemp("delta"), shards=2, namespaces=NAMESPACES) as srv:
        yield srv


def document(n: int) -> dict[str, Any]:
    """About 4 KB of JSON; version n differs from version n - 1 in two fields."""
    rows = [{"id": i, "title": f"row {i}", "price": i * 3, "stock": 10 + i} for i in range(60)]
    doc = {"version": n, "rows": copy.deepcopy(rows)}
    doc["rows"][n % 60]["stock"] = 1000 + n
    return doc


class Decoder:
    """What an SDK does with a delta subscription's publications (JSON protocol)."""

    def __init__(self) -> None:
        self.previous = b""
        self.deltas = 0

    def data(self, pub: dict[str, Any]) -> Any:
        text = pub["data"]
        assert isinstance(text, str), "a delta subscriber's data is a JSON string"
        if pub.get("delta"):
            self.deltas += 1
            self.previous = apply(self.previous, text.encode())
        else:
            self.previous = text.encode()
        return orjson.loads(self.previous)


async def delta_subscriber(server: Server, user: str, channel: str) -> WsClient:
    client = await WsClient.connected(server.port, make_token(user))
    reply = await client.subscribe(channel, delta="fossil", recover=False)
    assert reply["subscribe"].get("delta") is True, reply
    return client


def test_bytes_on_the_wire_are_at_least_five_times_fewer(server: Server) -> None:
    async def scenario() -> None:
        channel = "doc:bytes"
        users = users_on_shards("delta-bytes")
        plain = await WsClient.connected(server.port, make_token(users[0]))
        assert "delta" not in (await plain.subscribe(channel))["subscribe"]
        deltas = [await delta_subscriber(server, user, channel) for user in users]  # one on each shard
        start = {id(c): len(c.frames) for c in (plain, *deltas)}
        for n in range(100):
            await api(server, "publish", {"channel": channel, "data": document(n)})
        expected = [document(n) for n in range(100)]
        assert await plain.publications(channel, 100) == expected
        for client in deltas:
            decoder = Decoder()
            pushes = [await client.push("pub", channel) for _ in range(100)]
            assert [decoder.data(p["pub"]) for p in pushes] == expected
            assert not pushes[0]["pub"].get("delta")  # the first one after subscribing is in full
            assert decoder.deltas == 99

        def wire_bytes(client: WsClient) -> int:
            return sum(len(f) for f in client.frames[start[id(client)] :])

        ratio = wire_bytes(plain) / wire_bytes(deltas[0])
        print(f"delta: {wire_bytes(plain)} bytes in full, {wire_bytes(deltas[0])} as deltas, {ratio:.1f}x")
        assert ratio >= 5, f"delta subscriber received {ratio:.1f}x fewer bytes"
        for client in (plain, *deltas):
            await client.close()

    run(scenario(), 60)


def test_negotiation(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("delta-negotiation"))
        # A namespace without allowed_delta_types: subscribed, without delta; data stays plain JSON.
        reply = await client.subscribe("nodelta:x", delta="fossil")
        assert "subscribe" in reply and "delta" not in reply["subscribe"]
        await api(server, "publish", {"channel": "nodelta:x", "data": {"a": 1}, "delta": True})
        assert await client.publications("nodelta:x", 1) == [{"a": 1}]
        # A delta type nobody knows ends the connection as a bad request.
        await client.send_commands(
            {"id": client.next_id(), "subscribe": {"channel": "opt:x", "delta": "xdelta"}}
        )
        assert (await client.closed())[0] == 3501

    run(scenario())


def test_only_delta_capable_publications_go_as_deltas(server: Server) -> None:
    async def scenario() -> None:
        channel = "opt:capable"
        client = await delta_subscriber(server, "delta-capable", channel)
        decoder = Decoder()
        # "opt" has no delta_publish: the publish API's `delta` decides, publication by publication.
        for n, delta in enumerate([True, False, True, True, False]):
            await api(server, "publish", {"channel": channel, "data": document(n), "delta": delta})
        pushes = [(await client.push("pub", channel))["pub"] for _ in range(5)]
        assert [decoder.data(p) for p in pushes] == [document(n) for n in range(5)]
        assert [bool(p.get("delta")) for p in pushes] == [False, False, True, True, False]
        await client.close()

    run(scenario())


def test_protobuf_subscriber_gets_raw_deltas(server: Server) -> None:
    async def scenario() -> None:
        channel = "doc:pb"
        client = await WsClient.connected(server.port, make_token("delta-pb"), protocol="protobuf")
        assert (await client.subscribe(channel, delta="fossil"))["subscribe"].get("delta") is True
        for n in range(3):
            await api(server, "publish", {"channel": channel, "data": document(n)})
        pushes = [(await client.push("pub", channel))["pub"] for _ in range(3)]
        previous = b""
        for n, pub in enumerate(pushes):
            raw = pub["data"] if isinstance(pub["data"], bytes) else bytes(pub["data"], "latin-1")
            previous = apply(previous, raw) if pub.get("delta") else raw
            assert orjson.loads(previous) == document(n)
        assert [bool(p.get("delta")) for p in pushes] == [False, True, True]
        await client.close()

    run(scenario())


def test_recovery_sends_full_payloads_then_deltas_again(server: Server) -> None:
    async def scenario() -> None:
        channel = "doc:recover"
        user = "delta-recover"
        first = await WsClient.connected(server.port, make_token(user))
        await first.subscribe(channel, delta="fossil", recover=False)
        top = None
        for n in range(3):
            top = (await api(server, "publish", {"channel": channel, "data": document(n)}))["result"]
        await first.publications(channel, 3)
        await first.close()
        for n in range(3, 6):
            await api(server, "publish", {"channel": channel, "data": document(n)})
        again = await WsClient.connected(server.port, make_token(user))
        assert top is not None
        reply = await again.subscribe(
            channel, delta="fossil", recover=True, offset=top["offset"], epoch=top["epoch"]
        )
        result = reply["subscribe"]
        assert result["recovered"] is True and result["delta"] is True
        decoder = Decoder()
        assert [decoder.data(p) for p in result["publications"]] == [document(n) for n in range(3, 6)]
        assert not any(p.get("delta") for p in result["publications"])
        for n in range(6, 9):
            await api(server, "publish", {"channel": channel, "data": document(n)})
        pushes = [(await again.push("pub", channel))["pub"] for _ in range(3)]
        assert [decoder.data(p) for p in pushes] == [document(n) for n in range(6, 9)]
        assert [bool(p.get("delta")) for p in pushes] == [False, True, True]
        await again.close()

    run(scenario())
