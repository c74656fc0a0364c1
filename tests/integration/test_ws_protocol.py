"""Bidirectional WebSocket over real processes: ordering across shards, malformed input, binary data.

Every test talks to one module-wide server (router + 2 shards) through independent raw clients: the
``websockets`` library's client speaking the client protocol in JSON or protobuf (see ``wsclient``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import orjson
import pytest

from tests.integration.wsclient import RawWs, WsClient, api, pub_data, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import make_token

MAIN_CONFIG = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_client": True,
    "namespaces": [{"name": "ns", "allow_subscribe_for_client": True, "allow_publish_for_client": True}],
    "websocket_message_size_limit": 1024,
    "client_channel_limit": 2,
    "allowed_origins": ["http://good.example", "http://*.glob.example"],
    "client_stale_close_delay": "1s",
    "client_queue_max_size": 65536,
}


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("ws-main"), shards=2, **MAIN_CONFIG) as srv:
        yield srv


# -- 1. ordering ------------------------------------------------------------------------------------

API_THREADS = 4
API_PER_THREAD = 40
WS_PER_PUBLISHER = 50


def test_concurrent_publications_arrive_in_one_order_on_both_shards(main: Server) -> None:
    channel = f"order-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        # A JSON and a protobuf subscriber on each shard.
        subscribers = [
            await WsClient.connected(main.port, make_token(u), protocol)
            for protocol in ("json", "protobuf")
            for u in users_on_shards(f"order-sub-{protocol}")
        ]
        for sub in subscribers:
            assert "subscribe" in await sub.subscribe(channel)
        # One JSON publisher on shard 0, one protobuf publisher on shard 1.
        pub_users = users_on_shards("order-pub")
        publishers = [
            await WsClient.connected(main.port, make_token(pub_users[0]), "json"),
            await WsClient.connected(main.port, make_token(pub_users[1]), "protobuf"),
        ]
        start = threading.Event()

        def api_publisher(k: int) -> None:
            start.wait(5)
            for n in range(API_PER_THREAD):
                reply = main.api("publish", {"channel": channel, "data": {"src": f"api{k}", "n": n}})
                assert reply == {"result": {}}, reply

        async def ws_publisher(k: int, client: WsClient) -> None:
            await asyncio.to_thread(start.wait, 5)
            for n in range(WS_PER_PUBLISHER):
                reply = await client.publish(channel, {"src": f"ws{k}", "n": n})
                assert reply.get("publish") == {}, reply

        tasks = [asyncio.to_thread(api_publisher, k) for k in range(API_THREADS)]
        tasks += [ws_publisher(k, c) for k, c in enumerate(publishers)]
        gathered = asyncio.gather(*tasks)
        start.set()
        await gathered
        total = API_THREADS * API_PER_THREAD + len(publishers) * WS_PER_PUBLISHER
        assert total >= 200
        received = [
            [pub_data(sub, d) for d in await sub.publications(channel, total, timeout=20)]
            for sub in subscribers
        ]
        await asyncio.sleep(0.2)  # the point: nothing beyond what was sent arrives meanwhile
        for sub in subscribers:
            extra = [m for m in sub.inbox if m.get("push", {}).get("channel") == channel]
            assert not extra, f"publications beyond the {total} sent: {extra[:3]}"
        first = received[0]
        expected = {(f"api{k}", n) for k in range(API_THREADS) for n in range(API_PER_THREAD)}
        expected |= {(f"ws{k}", n) for k in range(len(publishers)) for n in range(WS_PER_PUBLISHER)}
        assert {(d["src"], d["n"]) for d in first} == expected
        assert len(first) == total
        for index, other in enumerate(received[1:], 1):
            mismatch = next((i for i, (a, b) in enumerate(zip(first, other, strict=True)) if a != b), None)
            assert mismatch is None, (
                f"subscriber {index} ({subscribers[index].protocol}) differs from position {mismatch}: "
                f"{first[mismatch : mismatch + 5]} vs {other[mismatch : mismatch + 5]}"
            )
        # Each publisher waited for every publish to finish before the next: its own order is kept.
        for source in {d["src"] for d in first}:
            numbers = [d["n"] for d in first if d["src"] == source]
            assert numbers == sorted(numbers), f"{source} reordered: {numbers}"
        for client in subscribers + publishers:
            assert client.is_open
            await client.close()

    run(scenario(), 60)


# -- 2. malformed input -----------------------------------------------------------------------------


async def healthy_clients(server: Server) -> tuple[list[WsClient], str]:
    """One connected subscriber per shard on a fresh channel."""
    channel = f"health-{uuid.uuid4().hex[:8]}"
    clients = []
    for user in users_on_shards(f"healthy-{uuid.uuid4().hex[:4]}"):
        client = await WsClient.connected(server.port, make_token(user))
        assert "subscribe" in await client.subscribe(channel)
        clients.append(client)
    return clients, channel


async def assert_still_served(server: Server, clients: list[WsClient], channel: str) -> None:
    data = {"health": uuid.uuid4().hex}
    assert await api(server, "publish", {"channel": channel, "data": data}) == {"result": {}}
    for client in clients:
        push = await client.push("pub", channel)
        assert push["pub"]["data"] == data
        assert client.is_open


async def fresh(server: Server, protocol: str = "json", connect: bool = True) -> WsClient:
    client = await WsClient.open(server.port, protocol)
    client.user = f"bad-{uuid.uuid4().hex[:6]}"
    if connect:
        reply = await client.connect(make_token(client.user))
        assert "connect" in reply, reply
    return client


async def closed_with(client: WsClient, code: int) -> None:
    got, reason = await client.closed(5)
    assert got == code, f"expected close {code}, got {got} {reason!r}; inbox: {client.inbox}"


async def case_invalid_json_first(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.ws.send('{"id": 1, "connect": {')
    await closed_with(client, 3501)


async def case_invalid_json_after_connect(server: Server) -> None:
    client = await fresh(server)
    await client.ws.send("not json at all")
    await closed_with(client, 3501)


async def case_command_before_connect(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.send_commands({"id": 1, "subscribe": {"channel": "news"}})
    await closed_with(client, 3501)


async def case_unknown_command(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "frobnicate": {"channel": "news"}})
    await closed_with(client, 3501)


async def case_missing_id(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"subscribe": {"channel": "news"}})
    await closed_with(client, 3501)


async def case_invalid_utf8_after_connect(server: Server) -> None:
    client = await fresh(server)
    await client.ws.send(b'{"id":2,"subscribe":{"channel":"caf\xc3\x28"}}', text=True)
    await closed_with(client, 1007)


async def case_invalid_utf8_first(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.ws.send(b'{"id":1,"connect":{"token":"\xff\xfe"}}', text=True)
    await closed_with(client, 1007)


async def case_too_big_after_connect(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "publish": {"channel": "news", "data": {"x": "y" * 2000}}})
    await closed_with(client, 1009)


async def case_too_big_first(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.send_commands({"id": 1, "connect": {"token": make_token("big"), "name": "z" * 2000}})
    await closed_with(client, 1009)


async def case_protobuf_garbage_after_connect(server: Server) -> None:
    client = await fresh(server, "protobuf")
    await client.ws.send(b"\x04\xff\xff\xff\xff")
    await closed_with(client, 3501)


async def case_protobuf_garbage_first(server: Server) -> None:
    client = await fresh(server, "protobuf", connect=False)
    await client.ws.send(b"\x09\x08\x01\xff\xff\xff\xff\xff\xff\xff")
    await closed_with(client, 3501)


async def case_protobuf_truncated_frame(server: Server) -> None:
    client = await fresh(server, "protobuf")
    await client.ws.send(b"\x20\x08\x02")  # announces 32 bytes, carries 2
    await closed_with(client, 3501)


async def case_second_connect(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "connect": {"token": make_token("again")}})
    await closed_with(client, 3501)


async def case_invalid_token(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.send_commands({"id": 1, "connect": {"token": make_token("forged", secret="other-secret")}})
    await closed_with(client, 3500)


async def case_garbage_token(server: Server) -> None:
    client = await fresh(server, "protobuf", connect=False)
    await client.send_commands({"id": 1, "connect": {"token": "not.a.jwt"}})
    await closed_with(client, 3500)


async def case_pong_before_connect(server: Server) -> None:
    client = await fresh(server, connect=False)
    await client.send_commands({})
    await closed_with(client, 3501)


async def case_unknown_namespace(server: Server) -> None:
    client = await fresh(server)
    reply = await client.subscribe("nowhere:chat")
    assert reply["error"]["code"] == 102, reply
    assert "subscribe" in await client.subscribe("ns:chat")
    assert client.is_open


async def case_duplicate_subscribe(server: Server) -> None:
    client = await fresh(server)
    assert "subscribe" in await client.subscribe("dup")
    reply = await client.subscribe("dup")
    assert reply["error"]["code"] == 105, reply
    assert client.is_open


async def case_channel_limit(server: Server) -> None:
    client = await fresh(server, "protobuf")
    assert "subscribe" in await client.subscribe("lim-a")
    assert "subscribe" in await client.subscribe("lim-b")
    reply = await client.subscribe("lim-c")
    assert reply["error"]["code"] == 106, reply
    assert client.is_open


async def case_private_without_token(server: Server) -> None:
    client = await fresh(server)
    reply = await client.subscribe("$secret")
    assert reply["error"]["code"] == 103, reply
    assert client.is_open


async def case_expired_token(server: Server) -> None:
    client = await fresh(server, connect=False)
    reply = await client.connect(make_token("late", exp=int(time.time()) - 10))
    assert reply["error"]["code"] == 109, reply
    await asyncio.sleep(0.3)  # the point: no disconnect follows the error reply meanwhile
    assert client.is_open, "an expired token is an error reply, not a disconnect"
    # After a connect error the connection is unusable.
    await client.send_commands({"id": 2, "subscribe": {"channel": "news"}})
    await closed_with(client, 3501)


# -- 6. binary data and JSON clients ----------------------------------------------------------------


def test_binary_publication_closes_json_subscribers_with_3506(main: Server) -> None:
    channel = f"bin-{uuid.uuid4().hex[:6]}"
    payload = b"\x00\x01binary\xfe\xff"

    async def scenario() -> None:
        json_subs = [await WsClient.connected(main.port, make_token(u)) for u in users_on_shards("bin-json")]
        pb_subs = [
            await WsClient.connected(main.port, make_token(u), "protobuf") for u in users_on_shards("bin-pb")
        ]
        for sub in json_subs + pb_subs:
            assert "subscribe" in await sub.subscribe(channel)
        healthy, health_channel = await healthy_clients(main)
        publisher = await WsClient.connected(main.port, make_token("bin-publisher"), "protobuf")
        reply = await publisher.publish(channel, payload)
        assert reply.get("publish") == {}, reply
        for sub in pb_subs:
            push = await sub.push("pub", channel)
            assert push["pub"]["data"] == payload
        for sub in json_subs:
            code, reason = await sub.closed(5)
            assert code == 3506, (code, reason, sub.inbox)
        # Protobuf subscribers go on receiving JSON as well.
        await publisher.publish(channel, {"after": 1})
        for sub in pb_subs:
            push = await sub.push("pub", channel)
            assert pub_data(sub, push["pub"]["data"]) == {"after": 1}
        await assert_still_served(main, healthy, health_channel)
        for client in pb_subs + healthy + [publisher]:
            await client.close()

    run(scenario(), 30)


# -- framing and command rules ----------------------------------------------------------------------


async def case_ping_command(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "ping": {}})
    await closed_with(client, 3501)


async def case_send_without_handler(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"send": {"data": {"x": 1}}})
    await closed_with(client, 3508)


async def case_bad_channel_names(server: Server) -> None:
    client = await fresh(server)
    reply = await client.subscribe("c" * 256)
    assert reply["error"]["code"] == 107, reply
    reply = await client.subscribe("caf\u00e9")
    assert reply["error"]["code"] == 107, reply
    assert client.is_open


async def case_fragmented_too_big(server: Server) -> None:
    client = await fresh(server)
    await client.ws.send(['{"id":2,"publish":{"channel":"news","data":"', "a" * 600, "b" * 600, '"}}'])
    await closed_with(client, 1009)


async def case_unmasked_frame_after_connect(server: Server) -> None:
    raw = await asyncio.to_thread(RawWs, server.port, None)
    raw.send_text(f'{{"id":1,"connect":{{"token":"{make_token("unmasked")}"}}}}')
    assert "connect" in (await asyncio.to_thread(raw.read_json))[0]
    raw.send_raw(RawWs.frame(1, b'{"id":2,"subscribe":{"channel":"news"}}', masked=False))
    ending = await asyncio.to_thread(raw.ending)
    assert ending in ("close 1002", "eof", "reset"), ending
    raw.close()


async def case_unmasked_first_frame(server: Server) -> None:
    raw = await asyncio.to_thread(RawWs, server.port, None)
    raw.send_raw(
        RawWs.frame(1, f'{{"id":1,"connect":{{"token":"{make_token("u")}"}}}}'.encode(), masked=False)
    )
    ending = await asyncio.to_thread(raw.ending)
    assert ending in ("close 1002", "eof", "reset"), ending
    raw.close()


def test_several_commands_in_one_frame(main: Server) -> None:
    async def scenario() -> None:
        for protocol in ("json", "protobuf"):
            user = f"multi-{protocol}"
            client = await WsClient.open(main.port, protocol)
            # JSON decoding must accept unknown fields.
            extra = {"unknown_field": 5} if protocol == "json" else {}
            await client.send_commands(
                {"id": 1, "connect": {"token": make_token(user)}},
                {"id": 2, "subscribe": {"channel": "multi-a", "flag": 1, **extra}},
                {"id": 3, "subscribe": {"channel": "multi-b"}},
            )
            connected = (await client.reply(1))["connect"]
            assert (await client.reply(2)).get("subscribe") == {}
            assert (await client.reply(3)).get("subscribe") == {}
            await client.send_commands(
                {"id": 4, "publish": {"channel": "multi-a", "data": _data(protocol, {"one": 1})}},
                {"id": 5, "publish": {"channel": "multi-b", "data": _data(protocol, {"two": 2})}},
            )
            assert (await client.reply(4)).get("publish") == {}
            assert (await client.reply(5)).get("publish") == {}
            for channel, data in (("multi-a", {"one": 1}), ("multi-b", {"two": 2})):
                push = await client.push("pub", channel)
                assert pub_data(client, push["pub"]["data"]) == data
                # A client-side publication carries the publisher's ClientInfo.
                info = push["pub"]["info"]
                assert info["user"] == user and info["client"] == connected["client"], info
            await client.close()

    run(scenario())


def _data(protocol: str, value: object) -> object:
    return orjson.dumps(value) if protocol == "protobuf" else value


def test_fragments_and_split_writes_are_reassembled(main: Server) -> None:
    async def scenario() -> None:
        # Fragmented messages (continuation frames), before and after the connect.
        client = await WsClient.open(main.port)
        token = make_token("fragments")
        connect = orjson.dumps({"id": 1, "connect": {"token": token}}).decode()
        await client.ws.send([connect[:10], connect[10:40], connect[40:]])
        assert "connect" in await client.reply(1)
        subscribe = '{"id":2,"subscribe":{"channel":"frag"}}'
        await client.ws.send([subscribe[:5], subscribe[5:]])
        assert (await client.reply(2)).get("subscribe") == {}
        # Native WebSocket pings are answered with pongs.
        await asyncio.wait_for(await client.ws.ping(b"are you there"), 5)
        await client.close()

        def split_writes() -> list[dict]:
            raw = RawWs(main.port, None)
            frame = RawWs.frame(1, f'{{"id":1,"connect":{{"token":"{make_token("split")}"}}}}'.encode())
            frame += RawWs.frame(9, b"early ping")
            # The first message arrives in pieces; the next command rides with its last piece.
            raw.send_raw(frame[:3])
            time.sleep(0.1)  # a pause, so that the pieces reach the server as separate reads
            raw.send_raw(frame[3:30])
            time.sleep(0.1)
            raw.send_raw(frame[30:] + RawWs.frame(1, b'{"id":2,"subscribe":{"channel":"split"}}'))
            replies: list[dict] = []
            pongs = 0
            while len(replies) < 2:
                opcode, payload = raw.read_frame()
                if opcode == 10:
                    assert payload == b"early ping"
                    pongs += 1
                elif opcode == 1:
                    replies.extend(orjson.loads(line) for line in payload.split(b"\n"))
                else:
                    raise AssertionError(f"unexpected frame {opcode} {payload!r}")
            if not pongs:
                opcode, payload = raw.read_frame()
                assert (opcode, payload) == (10, b"early ping")
            raw.close()
            return replies

        replies = await asyncio.to_thread(split_writes)
        assert "connect" in replies[0] and replies[0]["id"] == 1, replies
        assert replies[1] == {"id": 2, "subscribe": {}}, replies

    run(scenario())


async def case_size_limit_boundary(server: Server) -> None:
    client = await fresh(server)
    assert "subscribe" in await client.subscribe("edge")
    head = '{"id":2,"publish":{"channel":"edge","data":"'
    tail = '"}}'
    exact = head + "e" * (1024 - len(head) - len(tail)) + tail
    assert len(exact.encode()) == 1024
    await client.ws.send(exact)
    assert (await client.reply(2)).get("publish") == {}
    await client.push("pub", "edge")
    await client.ws.send(exact.replace('"id":2', '"id":3').replace('"e', '"ee', 1))
    await closed_with(client, 1009)


async def case_unsubscribe(server: Server) -> None:
    client = await fresh(server, "protobuf")
    assert (await client.command("unsubscribe", {"channel": "never"})).get("unsubscribe") == {}
    assert "subscribe" in await client.subscribe("unsub")
    assert (await client.command("unsubscribe", {"channel": "unsub"})).get("unsubscribe") == {}
    await api(server, "publish", {"channel": "unsub", "data": {"gone": 1}})
    assert "subscribe" in await client.subscribe("unsub")  # subscribing again is allowed
    await api(server, "publish", {"channel": "unsub", "data": {"back": 1}})
    push = await client.push("pub", "unsub")
    assert pub_data(client, push["pub"]["data"]) == {"back": 1}, push


# -- tokens, refresh and unavailable features: error replies or disconnects ------------------------


def hour() -> int:
    return int(time.time()) + 3600


async def case_sub_token_valid(server: Server) -> None:
    client = await fresh(server)
    channel = f"$p-{client.user}"
    reply = await client.subscribe(channel, token=make_token(client.user, channel=channel, exp=hour()))
    result = reply["subscribe"]
    assert result["expires"] is True and 3590 <= result["ttl"] <= 3600, reply
    await api(server, "publish", {"channel": channel, "data": {"private": 1}})
    assert (await client.push("pub", channel))["pub"]["data"] == {"private": 1}


async def case_sub_token_bad_signature(server: Server) -> None:
    client = await fresh(server, "protobuf")
    channel = "$p-sig"
    reply = await client.subscribe(channel, token=make_token(client.user, "wrong-secret", channel=channel))
    assert reply["error"]["code"] == 103, reply
    assert client.is_open


async def case_sub_token_expired(server: Server) -> None:
    client = await fresh(server)
    channel = "$p-exp"
    token = make_token(client.user, channel=channel, exp=int(time.time()) - 10)
    reply = await client.subscribe(channel, token=token)
    assert reply["error"]["code"] == 109, reply
    assert client.is_open


async def case_sub_token_other_user(server: Server) -> None:
    client = await fresh(server)
    channel = "$p-other"
    await client.send_commands(
        {"id": 2, "subscribe": {"channel": channel, "token": make_token("someone-else", channel=channel)}}
    )
    await closed_with(client, 3500)


async def case_sub_token_other_channel(server: Server) -> None:
    client = await fresh(server)
    token = make_token(client.user, channel="$p-one")
    await client.send_commands({"id": 2, "subscribe": {"channel": "$p-two", "token": token}})
    await closed_with(client, 3500)


async def case_refresh_ok(server: Server) -> None:
    client = await fresh(server)
    reply = await client.command("refresh", {"token": make_token(client.user, exp=hour())})
    assert reply["refresh"]["expires"] is True and 3590 <= reply["refresh"]["ttl"] <= 3600, reply
    assert client.is_open


async def case_refresh_other_user(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "refresh": {"token": make_token("not-me")}})
    await closed_with(client, 3500)


async def case_refresh_expired(server: Server) -> None:
    client = await fresh(server, "protobuf")
    token = make_token(client.user, exp=int(time.time()) - 10)
    await client.send_commands({"id": 2, "refresh": {"token": token}})
    await closed_with(client, 3005)


async def case_refresh_empty_token(server: Server) -> None:
    client = await fresh(server)
    await client.send_commands({"id": 2, "refresh": {}})
    await closed_with(client, 3501)


async def case_sub_refresh_errors(server: Server) -> None:
    client = await fresh(server)
    reply = await client.command("sub_refresh", {"channel": "$p-none", "token": make_token(client.user)})
    assert reply["error"]["code"] == 103, reply
    assert "subscribe" in await client.subscribe("sr")
    reply = await client.command("sub_refresh", {"channel": "sr"})
    assert reply["error"]["code"] == 107, reply
    assert client.is_open


async def case_features_off(server: Server) -> None:
    client = await fresh(server)
    assert "subscribe" in await client.subscribe("feat")
    for method in ("history", "presence", "presence_stats"):
        reply = await client.command(method, {"channel": "feat"})
        assert reply["error"]["code"] == 108, (method, reply)
    reply = await client.command("rpc", {"method": "nothing", "data": {}})
    assert reply["error"]["code"] == 108, reply
    reply = await client.publish("nowhere:chat", {"x": 1})
    assert reply["error"]["code"] == 102, reply
    assert client.is_open


async def case_token_channels_unknown_namespace(server: Server) -> None:
    client = await fresh(server, connect=False)
    reply = await client.connect(make_token("chans", channels=["nowhere:news"]))
    assert reply["error"]["code"] == 102, reply


# -- every malformed-input case, each beside healthy clients on both shards -----------------------

MALFORMED: dict[str, Callable[[Server], Awaitable[None]]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_answered_and_harms_nobody_else(main: Server, case: str) -> None:
    async def scenario() -> None:
        healthy, channel = await healthy_clients(main)
        await MALFORMED[case](main)
        await assert_still_served(main, healthy, channel)
        for client in healthy:
            await client.close()

    run(scenario(), 30)
