"""Several nodes on one real redis-server act as one server (the Redis engine).

Three nodes of two shards each share a module's redis-server; each node has its own port and runtime
directory. Tests that kill a node or Redis start their own.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from broker.delta.fossil import apply
from broker.hashing import shard_for_user
from tests.integration.streamclient import StreamClient
from tests.integration.wsclient import WsClient, api, run
from tests.support import redis_server as redis_support
from tests.support.redis_server import RedisServer, command
from tests.support.server import Process, Server, free_port
from tests.support.tokens import make_token
from tests.support.waiting import eventually

NAMESPACES = [
    {
        "name": "hist",
        "history_size": 100,
        "history_ttl": "300s",
        "allow_recovery": True,
        "allow_subscribe_for_client": True,
    },
    {"name": "room", "presence": True, "join_leave": True, "force_push_join_leave": True},
    {
        "name": "doc",
        "allow_subscribe_for_client": True,
        "allowed_delta_types": ["fossil"],
        "delta_publish": True,
    },
]


def node_config(redis: RedisServer, **extra: Any) -> dict[str, Any]:
    return {
        "engine": "redis",
        "redis_address": redis.address,
        "redis_prefix": "mn",
        "node_info_interval": "0.3s",
        "api_node_timeout": "2s",
        "namespaces": NAMESPACES,
        **extra,
    }


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not redis_support.available():
        pytest.fail("redis-server is missing: make test installs it (make services)")
    with RedisServer(tmp_path_factory.mktemp("mn-redis")) as server:
        yield server


def start_nodes(tmp: Path, redis: RedisServer, count: int, **extra: Any) -> list[Server]:
    nodes: list[Server] = []
    try:
        for i in range(count):
            nodes.append(Server(tmp, name=f"node-{i}", **node_config(redis, **extra)).start())
        eventually(
            lambda: all(len(n.api("info", {})["result"]["nodes"]) == count for n in nodes),
            timeout=10,
            what=f"every node to see {count} nodes",
        )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[list[Server]]:
    started = start_nodes(tmp_path_factory.mktemp("mn-nodes"), redis, 3, client_user_connection_limit=3)
    yield started
    for node in started:
        node.stop()


def stream(node: Server, user: str, channels: list[str], **body: Any) -> StreamClient:
    client = StreamClient(node.port, {"token": make_token(user, channels=channels), **body})
    return client


def admitted(node: Server, user: str) -> StreamClient | None:
    """A new connection of ``user`` that stays (a refused uni stream gets its connect push, then 3504)."""
    client = stream(node, user, [])
    client.connect()
    client.sock.settimeout(0.5)
    try:
        message = client.read()
    except TimeoutError:
        client.sock.settimeout(5)
        return client
    assert message is not None and message["disconnect"]["code"] == 3504, message
    client.close()
    return None


def event_of(client: StreamClient, kind: str, user: str) -> dict[str, Any]:
    """The next ``join`` / ``leave`` of ``user`` (a subscriber also sees its own join)."""
    while True:
        info: dict[str, Any] = client.read_until(kind)[kind]["info"]
        if info["user"] == user:
            return info


def test_info_lists_every_node_this_one_first(nodes: list[Server]) -> None:
    for node in nodes:
        listed = node.api("info", {})["result"]["nodes"]
        assert listed[0]["name"] == node.config["name"]
        assert sorted(n["name"] for n in listed) == ["node-0", "node-1", "node-2"]
        assert len({n["uid"] for n in listed}) == 3 and all(len(n["shards"]) == 2 for n in listed)


def test_publications_from_any_node_reach_every_node_in_one_order(nodes: list[Server]) -> None:
    clients = [stream(node, f"reader-{i}", ["hist:order"]) for i, node in enumerate(nodes)]
    for client in clients:
        client.connect()
    offsets = [
        nodes[n % 3].api("publish", {"channel": "hist:order", "data": {"n": n}})["result"]["offset"]
        for n in range(30)
    ]
    assert offsets == list(range(offsets[0], offsets[0] + 30))
    for client in clients:
        got = [client.read_until("pub")["pub"] for _ in range(30)]
        assert [p["data"]["n"] for p in got] == list(range(30))
        assert [p["offset"] for p in got] == offsets
        client.close()


def test_delta_subscribers_on_every_node_decode_publications_from_any_node(nodes: list[Server]) -> None:
    versions = [
        orjson.dumps({"rows": [{"id": i, "v": 1000 + n if i == n else i} for i in range(100)]})
        for n in range(12)
    ]

    async def scenario() -> None:
        clients = []
        for i, node in enumerate(nodes):
            client = await WsClient.connected(node.port, make_token(f"delta-{i}"))
            assert (await client.subscribe("doc:multi", delta="fossil"))["subscribe"]["delta"] is True
            clients.append(client)
        for n, data in enumerate(versions):
            await api(nodes[n % 3], "publish", {"channel": "doc:multi", "data": orjson.loads(data)})
        for client in clients:
            previous, deltas = b"", 0
            for data in versions:
                pub = (await client.push("pub", "doc:multi"))["pub"]
                if pub.get("delta"):
                    deltas += 1
                    previous = apply(previous, pub["data"].encode())
                else:
                    previous = pub["data"].encode()
                assert orjson.loads(previous) == orjson.loads(data)
            assert deltas == len(versions) - 1
            await client.close()

    run(scenario())


def test_session_management_reaches_every_node(nodes: list[Server]) -> None:
    async def scenario() -> None:
        token = make_token("mn-revoked", jti="mn-token")
        clients = [await WsClient.connected(node.port, token) for node in nodes[1:]]
        await api(nodes[0], "revoke_token", {"uid": "mn-token"})
        for client in clients:
            assert (await client.closed(timeout=2.0))[0] == 3500
        await api(nodes[0], "block_user", {"user": "mn-blocked"})
        for node in nodes:
            refused = await WsClient.open(node.port)
            with pytest.raises(AssertionError):
                await refused.connect(make_token("mn-blocked"))
            assert (await refused.closed())[0] == 3503
        await api(nodes[2], "unblock_user", {"user": "mn-blocked"})
        allowed = await WsClient.connected(nodes[0].port, make_token("mn-blocked"))
        await allowed.close()

    run(scenario())


def test_a_node_started_later_refuses_what_was_blocked_and_revoked_before(
    nodes: list[Server], redis: RedisServer, tmp_path: Path
) -> None:
    nodes[0].api("block_user", {"user": "mn-late-blocked"})
    nodes[1].api("revoke_token", {"uid": "mn-late-token", "expire_at": int(time.time()) + 600})
    nodes[2].api("block_user", {"user": "mn-late-unblocked"})
    nodes[0].api("unblock_user", {"user": "mn-late-unblocked"})
    late = Server(tmp_path, name="node-late", **node_config(redis, client_user_connection_limit=3)).start()
    try:

        async def code(token: str) -> int:
            client = await WsClient.open(late.port)
            try:
                await client.connect(token)
            except AssertionError:
                return (await client.closed())[0]
            await client.close()
            return 0

        assert run(code(make_token("mn-late-blocked"))) == 3503
        assert run(code(make_token("mn-late-someone", jti="mn-late-token"))) == 3500
        assert run(code(make_token("mn-late-unblocked"))) == 0
    finally:
        late.stop()
        nodes[0].api("unblock_user", {"user": "mn-late-blocked"})
        # The stopped node leaves the others' view before the next test counts nodes.
        eventually(
            lambda: all(len(n.api("info", {})["result"]["nodes"]) == 3 for n in nodes),
            timeout=10,
            what="the late node to be forgotten",
        )


def test_user_status_is_shared_by_every_node(nodes: list[Server]) -> None:
    async def scenario() -> None:
        before = int(time.time())
        client = await WsClient.connected(nodes[1].port, make_token("mn-status"))
        reply = await client.command("rpc", {"method": "update_user_status", "data": {}})
        assert "error" not in reply, reply
        await api(nodes[2], "update_user_status", {"users": ["mn-status-idle"]})
        for node in nodes:
            found = (await api(node, "get_user_status", {"users": ["mn-status", "mn-status-idle"]}))["result"]
            statuses = {s["user"]: s for s in found["statuses"]}
            assert statuses["mn-status"]["active"] >= before
            assert statuses["mn-status"]["online"] >= before  # connected on node 1: online now, everywhere
            assert (
                statuses["mn-status-idle"]["active"] >= before and statuses["mn-status-idle"]["online"] == 0
            )
        await client.close()
        await api(nodes[0], "delete_user_status", {"users": ["mn-status", "mn-status-idle"]})
        found = (await api(nodes[1], "get_user_status", {"users": ["mn-status-idle"]}))["result"]
        assert found["statuses"] == [{"user": "mn-status-idle", "active": 0, "online": 0}]

    run(scenario())


def test_a_client_recovers_on_another_node_what_it_missed(nodes: list[Server]) -> None:
    first = stream(nodes[0], "mover", ["hist:move"])
    first.connect()
    top = nodes[1].api("publish", {"channel": "hist:move", "data": {"n": 0}})["result"]
    assert first.read_until("pub")["pub"]["data"] == {"n": 0}
    first.close()
    for n in range(1, 6):
        nodes[2].api("publish", {"channel": "hist:move", "data": {"n": n}})
    position = {"recover": True, "offset": top["offset"], "epoch": top["epoch"]}
    again = stream(nodes[1], "mover", [], subs={"hist:move": position})
    sub = again.connect()["subs"]["hist:move"]
    assert sub["recovered"] is True and sub["epoch"] == top["epoch"]
    assert [again.read_until("pub")["pub"]["data"]["n"] for _ in range(5)] == [1, 2, 3, 4, 5]
    again.close()


def test_history_answers_the_same_on_every_node(nodes: list[Server]) -> None:
    for n in range(3):
        nodes[n].api("publish", {"channel": "hist:same", "data": {"n": n}})
    answers = [node.api("history", {"channel": "hist:same", "limit": -1})["result"] for node in nodes]
    assert answers[0] == answers[1] == answers[2]
    assert [p["data"]["n"] for p in answers[0]["publications"]] == [0, 1, 2]


def test_presence_and_join_leave_across_nodes(nodes: list[Server]) -> None:
    watcher = stream(nodes[0], "watcher", ["room:a"])
    watcher.connect()
    joiner = stream(nodes[2], "joiner", ["room:a"])
    joined = joiner.connect()
    assert event_of(watcher, "join", "joiner")["client"] == joined["client"]
    for node in nodes:
        presence = node.api("presence", {"channel": "room:a"})["result"]["presence"]
        assert {p["user"] for p in presence.values()} == {"watcher", "joiner"}
        assert node.api("presence_stats", {"channel": "room:a"})["result"] == {
            "num_clients": 2,
            "num_users": 2,
        }
    joiner.close()
    event_of(watcher, "leave", "joiner")
    eventually(
        lambda: nodes[1].api("presence_stats", {"channel": "room:a"})["result"]["num_clients"] == 1,
        timeout=5,
        what="the leaver's presence entry to go",
    )
    watcher.close()


def test_connections_by_user_and_by_expression_across_nodes(nodes: list[Server]) -> None:
    clients = [stream(node, "everywhere", []) for node in nodes]
    ids = {client.connect()["client"] for client in clients}
    for node in nodes:
        found = node.api("connections", {"user": "everywhere"})["result"]
        assert set(found["connections"]) == ids and "unavailable_nodes" not in found
        found = node.api("connections", {"expression": 'user == "everywhere"'})["result"]
        assert set(found["connections"]) == ids
    capped = nodes[0].api("connections", {"expression": 'user == "everywhere"', "limit": 2})["result"]
    assert len(capped["connections"]) == 2 and capped["total"] == 3
    for client in clients:
        client.close()


def test_disconnect_reaches_the_users_connections_on_every_node(nodes: list[Server]) -> None:
    clients = [stream(node, "kicked", []) for node in nodes]
    for client in clients:
        client.connect()
    assert nodes[1].api("disconnect", {"user": "kicked"}) == {"result": {}}
    # The API's default: 3503 "force reconnect", on every node alike.
    assert [client.read_until("disconnect")["disconnect"]["code"] for client in clients] == [3503] * 3
    eventually(
        lambda: nodes[0].api("connections", {"user": "kicked"})["result"]["connections"] == {},
        timeout=5,
        what="no connection of the user left",
    )


def test_the_user_connection_limit_holds_over_every_node(nodes: list[Server]) -> None:
    held = [stream(node, "limited", []) for node in nodes]
    for client in held:
        client.connect()
    over = stream(nodes[0], "limited", [])
    assert over.read_until("disconnect")["disconnect"]["code"] == 3504
    held.pop().close()
    eventually(
        lambda: admitted(nodes[1], "limited"),
        timeout=5,
        retry_on=(AssertionError, KeyError, ConnectionError),
        what="room for one more connection once one closed",
    ).close()
    for client in held:
        client.close()


def test_channels_merge_over_nodes(nodes: list[Server]) -> None:
    clients = [stream(node, f"lister-{i}", ["room:listed"]) for i, node in enumerate(nodes)]
    for client in clients:
        client.connect()
    channels = nodes[2].api("channels", {"pattern": "room:listed"})["result"]["channels"]
    assert channels == {"room:listed": {"num_clients": 3}}
    for client in clients:
        client.close()


# -- faults ------------------------------------------------------------------------------------------


def test_a_killed_node_is_named_unavailable_then_forgotten_and_its_counts_released(
    tmp_path: Path, redis: RedisServer
) -> None:
    a, b = start_nodes(tmp_path, redis, 2, client_user_connection_limit=1, redis_prefix="kill")
    try:
        held = stream(b, "single", ["room:k"])
        held.connect()
        assert stream(a, "single", []).read_until("disconnect")["disconnect"]["code"] == 3504
        b.kill()
        started = time.monotonic()
        found = a.api("connections", {"expression": "true"})["result"]
        assert time.monotonic() - started < 5
        assert found["connections"] == {}
        # Asked while still listed (its last info is under three intervals old), it did not answer.
        assert [node["name"] for node in found["unavailable_nodes"]] == ["node-1"]
        eventually(
            lambda: [n["name"] for n in a.api("info", {})["result"]["nodes"]] == ["node-0"],
            timeout=5,
            what="the dead node to be dropped from info",
        )
        assert "unavailable_nodes" not in a.api("connections", {"expression": "true"})["result"]
        # Its count of the user expires (ten info intervals), so the user may connect elsewhere.
        eventually(
            lambda: admitted(a, "single"),
            timeout=10,
            interval=0.5,
            retry_on=(AssertionError, KeyError, ConnectionError),
            what="the dead node's user count to expire",
        ).close()
        eventually(
            lambda: a.api("presence", {"channel": "room:k"})["result"]["presence"] == {},
            timeout=5,
            what="the dead node's presence entries to go",
        )
    finally:
        a.stop()
        b.stop()


def test_redis_down_answers_100_promptly_keeps_clients_and_heals(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        a, b = start_nodes(tmp_path, redis, 2, redis_io_timeout="1s")
        try:
            reader = stream(b, "reader", ["hist:down"])
            reader.connect()
            a.api("publish", {"channel": "hist:down", "data": {"n": 0}})
            assert reader.read_until("pub")["pub"]["data"] == {"n": 0}
            redis.kill()
            started = time.monotonic()
            answer = a.api("publish", {"channel": "hist:down", "data": {"n": 1}})
            assert answer["error"]["code"] == 100
            assert time.monotonic() - started < 3
            assert b.api("history", {"channel": "hist:down"})["error"]["code"] == 100
            redis.start()
            # Publishing works again at once; node b receives again once its link has resubscribed
            # (a reconnect delay). The reader, a plain (not positioned) subscriber, stayed connected
            # on the same stream throughout.
            reader.sock.settimeout(0.3)

            def publish_and_read() -> dict[str, Any] | None:
                a.api("publish", {"channel": "hist:down", "data": {"n": 2}})
                try:
                    return reader.read()
                except TimeoutError:
                    return None

            message = eventually(
                publish_and_read, timeout=15, interval=0.1, what="publications to flow again"
            )
            assert message is not None and message["pub"]["data"] == {"n": 2}
        finally:
            a.stop()
            b.stop()


def test_an_unreachable_redis_stops_the_start_with_its_address(tmp_path: Path) -> None:
    config = {"engine": "redis", "redis_address": "127.0.0.1:1", "redis_connect_timeout": "0.5s"}
    done = Server(tmp_path, **config).run_to_end(timeout=30)
    assert done.returncode == 1
    assert "cannot reach the standalone Redis at 127.0.0.1:1" in done.stderr


def test_a_restarted_shard_takes_back_its_previous_lifes_user_counts(
    tmp_path: Path, redis: RedisServer
) -> None:
    # Counts expire after ten info intervals (30 s here): far longer than the test waits.
    [node] = start_nodes(
        tmp_path, redis, 1, client_user_connection_limit=1, redis_prefix="seat", node_info_interval="3s"
    )
    try:
        held = stream(node, "solo", [])
        held.connect()
        assert stream(node, "solo", []).read_until("disconnect")["disconnect"]["code"] == 3504
        index = shard_for_user("solo", node.shards)
        old = node.shard_pids()[index]
        os.kill(old, signal.SIGKILL)
        eventually(lambda: node.shard_pids().get(index) not in (None, old), timeout=10, what="a new shard")
        node.wait_ready()
        started = time.monotonic()
        client = eventually(
            lambda: admitted(node, "solo"),
            timeout=10,
            interval=0.2,
            retry_on=(AssertionError, KeyError, ConnectionError),
            what="the user to connect again",
        )
        assert client is not None and time.monotonic() - started < 10
        client.close()
    finally:
        node.stop()


def test_channels_and_users_spread_over_several_redis_servers(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r1") as first, RedisServer(tmp_path / "r2") as second:
        addresses = [first.address, second.address]
        a, b = start_nodes(tmp_path, first, 2, redis_address=addresses, client_user_connection_limit=1)
        try:
            channels = [f"hist:spread-{i}" for i in range(12)]
            readers = [stream(b, f"spread-{i}", [channel]) for i, channel in enumerate(channels)]
            for reader in readers:
                reader.connect()
            for n, channel in enumerate(channels):
                a.api("publish", {"channel": channel, "data": {"n": n}})
            for n, reader in enumerate(readers):
                assert reader.read_until("pub")["pub"]["data"] == {"n": n}
                reader.close()
            streams = [int(command(server.port, "DBSIZE").strip(b":\r\n")) for server in (first, second)]
            assert all(count > 0 for count in streams), streams  # both servers hold some channels
            history = b.api("history", {"channel": channels[3], "limit": -1})["result"]["publications"]
            assert [p["data"] for p in history] == [{"n": 3}]
            held = stream(a, "one-only", [])
            held.connect()
            assert stream(b, "one-only", []).read_until("disconnect")["disconnect"]["code"] == 3504
            held.close()
        finally:
            a.stop()
            b.stop()


def test_a_node_speaks_tls_to_redis(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (Debian's openssl package)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*request, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert)]
    argv += ["--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    redis = Process(argv, tmp_path / "redis-tls.log")
    redis.spawn()
    try:
        eventually(lambda: _accepts(port), timeout=10, what="redis-server to listen for TLS")
        config = {
            "engine": "redis",
            "redis_address": f"rediss://127.0.0.1:{port}",
            "redis_tls_skip_verify": True,
        }
        with Server(tmp_path, namespaces=NAMESPACES, **config) as node:
            reader = stream(node, "tls-reader", ["hist:tls"])
            reader.connect()
            assert node.api("publish", {"channel": "hist:tls", "data": {"n": 1}})["result"]["offset"] == 1
            assert reader.read_until("pub")["pub"]["data"] == {"n": 1}
            reader.close()
        # Without skipping verification the self-signed certificate is refused at start, clearly.
        refused = Server(tmp_path, **{**config, "redis_tls_skip_verify": False}).run_to_end(timeout=30)
        assert refused.returncode == 1 and "cannot reach the standalone Redis" in refused.stderr, (
            refused.stderr
        )
    finally:
        redis.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_a_node_finds_its_redis_through_sentinel(tmp_path: Path, redis: RedisServer) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its file: one of its own, in the test's directory
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor main 127.0.0.1 {redis.port} 1\n"
    )
    sentinel = Process(["redis-server", str(conf), "--sentinel"], tmp_path / "sentinel.log")
    sentinel.spawn()
    try:
        eventually(lambda: _accepts(port), timeout=10, what="redis-sentinel to listen")
        address = f"redis+sentinel://127.0.0.1:{port}?sentinel_master_name=main"
        a, b = start_nodes(tmp_path, redis, 2, redis_address=address, redis_prefix="sentinel")
        try:
            reader = stream(b, "sentinel-reader", ["hist:sentinel"])
            reader.connect()
            offset = a.api("publish", {"channel": "hist:sentinel", "data": {"n": 1}})["result"]["offset"]
            assert reader.read_until("pub")["pub"] == {"data": {"n": 1}, "offset": offset}
            reader.close()
        finally:
            a.stop()
            b.stop()
    finally:
        sentinel.stop()


def test_an_emulation_frame_sent_to_another_node_reaches_the_session(
    tmp_path: Path, redis: RedisServer
) -> None:
    a, b = start_nodes(
        tmp_path, redis, 2, http_stream=True, allow_subscribe_for_client=True, redis_prefix="emu"
    )
    try:
        body = orjson.dumps({"id": 1, "connect": {"token": make_token("roaming")}})
        sock = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        head = "POST /connection/http_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        received = b""
        while b'"node"' not in received:
            received += sock.recv(65536)
        found = re.search(rb'"session":"([^"]+)","node":"([^"]+)"', received)
        assert found is not None
        session, node = found.group(1).decode(), found.group(2).decode()
        frame = orjson.dumps({"id": 2, "subscribe": {"channel": "roam"}}).decode()
        # The balancer sent this request to node b; the session lives on node a.
        answer = requests.post(
            f"{b.url}/emulation",
            data=orjson.dumps({"session": session, "node": node, "data": frame}),
            timeout=5,
        )
        assert answer.status_code == 204
        while b'{"id":2,"subscribe":{}}' not in received:
            received += sock.recv(65536)
        sock.close()
    finally:
        a.stop()
        b.stop()
