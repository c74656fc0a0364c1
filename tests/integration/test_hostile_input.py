"""Input meant to hurt, over real processes: JSON nested deeper than the server can write, tokens with
numbers out of range, more channels or batch commands than allowed, clients that stop reading, and
sockets that send slowly or nothing. Each is answered with the protocol's error and one log line; no
traceback, no connection left listed after its socket is gone, and healthy clients keep being served.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.wsclient import RawWs, WsClient, run
from tests.support.server import Server, wait_healthy
from tests.support.tokens import API_KEY, SECRET, make_token
from tests.support.waiting import eventually

CHANNEL_LIMIT = 5
BATCH_LIMIT = 10
HEAD_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
IDLE_TIMEOUT = 1.0

CONFIG = {
    "allow_subscribe_for_client": True,
    "allow_publish_for_client": True,
    "uni_websocket": True,
    "client_channel_limit": CHANNEL_LIMIT,
    "client_queue_max_size": 65536,
    "api_batch_max_size": BATCH_LIMIT,
    "http_request_head_timeout": f"{HEAD_TIMEOUT}s",
    "http_request_read_timeout": f"{READ_TIMEOUT}s",
    "http_idle_timeout": f"{IDLE_TIMEOUT}s",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("hostile"), shards=2, **CONFIG) as srv:
        yield srv


def assert_no_traceback(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def signed(payload: dict[str, Any]) -> str:
    """An HS256 token written with the stdlib, which (unlike orjson) writes integers past 64 bits."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(signature)}"


def client_count(server: Server) -> int:
    nodes = server.api("info", {})["result"]["nodes"]
    return sum(int(node["num_clients"]) for node in nodes)


def wait_until_gone(server: Server, user: str, timeout: float = 5.0) -> None:
    eventually(
        lambda: server.connections(user=user),
        until=lambda c: c == {},
        timeout=timeout,
        what=f"{user} unlisted",
    )


def upgrade_request(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def ending_of(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, str]:
    """Everything the server sends until it ends the stream, and the close code found (or eof)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    head, _, frames = data.partition(b"\r\n\r\n")
    pos = 0
    while pos + 2 <= len(frames):
        opcode, size, pos = frames[pos] & 0x0F, frames[pos + 1] & 0x7F, pos + 2
        if size == 126:
            size, pos = int.from_bytes(frames[pos : pos + 2], "big"), pos + 2
        elif size == 127:
            size, pos = int.from_bytes(frames[pos : pos + 8], "big"), pos + 8
        if opcode == 8:
            return head, f"close {int.from_bytes(frames[pos : pos + 2], 'big')}"
        pos += size
    return head, "eof"


# -- item 5: JSON nested deeper than orjson writes ----------------------------------------------------


@pytest.mark.parametrize("depth", [256, 1_024])
def test_deeply_nested_command_is_3501_and_a_neighbour_is_unaffected(server: Server, depth: int) -> None:
    channel = unique("nest")

    async def scenario() -> None:
        neighbour = await WsClient.connected(server.port, make_token(unique("neighbour")))
        assert "subscribe" in await neighbour.subscribe(channel)
        bad = await WsClient.connected(server.port, make_token(unique("nester")))
        await bad.ws.send(f'{{"id":2,"publish":{{"channel":"{channel}","data":{nested(depth)}}}}}')
        assert (await bad.closed())[0] == 3501
        reply = await neighbour.publish(channel, {"still": "here"})
        assert reply.get("publish") == {}, reply
        assert [p["still"] for p in await neighbour.publications(channel, 1)] == ["here"]
        await neighbour.close()

    run(scenario(), 30)
    assert_no_traceback(server)


@pytest.mark.parametrize("where", ["connect", "after-connect"])
def test_nested_frame_in_the_handshake_write_leaves_no_phantom(server: Server, where: str) -> None:
    user = unique("phantom")
    token = make_token(user)
    if where == "connect":
        frames = [f'{{"id":1,"connect":{{"token":"{token}","data":{nested(300)}}}}}']
    else:  # connect is fine; the next frame arrives with it and reaches the shard with the handoff
        frames = [
            f'{{"id":1,"connect":{{"token":"{token}"}}}}',
            f'{{"id":2,"publish":{{"channel":"x","data":{nested(300)}}}}}',
        ]
    before = client_count(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(upgrade_request(server.port) + b"".join(RawWs.frame(1, f.encode()) for f in frames))
        head, ending = ending_of(sock)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert ending == "close 3501", ending
    wait_until_gone(server, user, timeout=2)
    assert client_count(server) <= before
    assert_no_traceback(server)


@pytest.mark.parametrize("path", ["/api/publish", "/api", "/api/batch"])
@pytest.mark.parametrize("depth", [256, 1_024])
def test_nested_api_bodies_are_400(server: Server, path: str, depth: int) -> None:
    data = nested(depth)
    body = {
        "/api/publish": f'{{"channel":"c","data":{data}}}',
        "/api": f'{{"method":"publish","params":{{"channel":"c","data":{data}}}}}',
        "/api/batch": f'{{"commands":[{{"publish":{{"channel":"c","data":{data}}}}}]}}',
    }[path]
    for mode in ("", "transport"):
        response = requests.post(
            server.url + path,
            data=body.encode(),
            headers={"X-API-Key": API_KEY, "X-Centrifugo-Error-Mode": mode},
            timeout=5,
        )
        assert response.status_code == 400, (mode, response.status_code, response.text)
    assert server.api("publish", {"channel": "c", "data": {"ok": True}}) == {"result": {}}
    assert_no_traceback(server)


# -- item 8: numeric claims out of range ---------------------------------------------------------------


@pytest.mark.parametrize("claims", [{"exp": 2**64}, {"exp": 10**30}, {"iat": 2**64}, {"expire_at": 2**64}])
def test_out_of_range_token_claims_are_3500_and_nothing_is_listed(
    server: Server, claims: dict[str, int]
) -> None:
    user = unique("huge")
    token = signed({"sub": user, **claims})

    async def scenario() -> None:
        client = await WsClient.open(server.port)
        await client.send_commands({"id": 1, "connect": {"token": token}})
        assert (await client.closed())[0] == 3500

    run(scenario(), 20)
    assert server.connections(user=user) == {}
    assert_no_traceback(server)


def test_far_expiry_connects_with_a_ttl_the_protocol_carries(server: Server) -> None:
    async def scenario() -> None:
        for protocol in ("json", "protobuf"):
            client = await WsClient.open(server.port, protocol)
            reply = await client.connect(make_token(unique("far"), exp=2**62))
            assert reply["connect"]["ttl"] == 2**32 - 1, reply
            await client.close()

    run(scenario(), 20)


# -- item 9: limits ----------------------------------------------------------------------------------------


def test_token_channels_over_client_channel_limit_are_3505(server: Server) -> None:
    async def scenario() -> None:
        over = [unique("tc") for _ in range(CHANNEL_LIMIT + 3)]
        client = await WsClient.open(server.port)
        await client.send_commands({"id": 1, "connect": {"token": make_token(unique("many"), channels=over)}})
        assert (await client.closed())[0] == 3505
        client = await WsClient.open(server.port)
        subs = {channel: {} for channel in over}
        await client.send_commands({"id": 1, "connect": {"token": make_token(unique("many"), subs=subs)}})
        assert (await client.closed())[0] == 3505
        # At the limit: connected, subscribed to all of them.
        client = await WsClient.open(server.port)
        reply = await client.connect(make_token(unique("enough"), channels=over[:CHANNEL_LIMIT]))
        assert sorted(reply["connect"]["subs"]) == sorted(over[:CHANNEL_LIMIT]), reply
        await client.close()

    run(scenario(), 20)


def test_uni_stream_token_channels_over_the_limit_are_3505(server: Server) -> None:
    over = [unique("tcu") for _ in range(CHANNEL_LIMIT + 1)]
    body = json.dumps({"token": make_token(unique("uni-many"), channels=over)})
    response = requests.post(server.url + "/connection/uni_http_stream", data=body, timeout=5)
    assert response.status_code == 200
    assert json.loads(response.text.strip().splitlines()[-1])["disconnect"]["code"] == 3505, response.text


def api_post(server: Server, path: str, body: bytes, mode: str = "") -> requests.Response:
    headers = {"X-API-Key": API_KEY, "X-Centrifugo-Error-Mode": mode}
    return requests.post(server.url + path, data=body, headers=headers, timeout=10)


def test_batches_over_api_batch_max_size_are_107(server: Server) -> None:
    def batch(n: int) -> bytes:
        return json.dumps({"commands": [{"info": {}}] * n}).encode()

    ok = api_post(server, "/api/batch", batch(BATCH_LIMIT))
    assert ok.status_code == 200 and len(ok.json()["replies"]) == BATCH_LIMIT
    over = api_post(server, "/api/batch", batch(BATCH_LIMIT + 1))
    assert over.status_code == 200 and over.json()["error"]["code"] == 107, over.text
    assert "limit" in over.json()["error"]["message"]
    over = api_post(server, "/api/batch", batch(50_000), mode="transport")
    assert over.status_code == 400 and over.json()["code"] == 107, over.text

    line = json.dumps({"method": "info", "params": {}}).encode()
    ok = api_post(server, "/api", b"\n".join([line] * BATCH_LIMIT))
    assert ok.status_code == 200 and len(ok.text.splitlines()) == BATCH_LIMIT
    over = api_post(server, "/api", b"\n".join([line] * (BATCH_LIMIT + 1)))
    assert over.status_code == 400 and over.json()["error"]["code"] == 107, over.text


def test_slow_client_gets_the_3008_close_frame(server: Server) -> None:
    channel = unique("slow")
    user = unique("slow")
    slow = RawWs(server.port)
    slow.send_text(f'{{"id":1,"connect":{{"token":"{make_token(user)}"}}}}')
    assert "connect" in slow.read_json()[0]
    slow.send_text(f'{{"id":2,"subscribe":{{"channel":"{channel}"}}}}')
    assert "subscribe" in slow.read_json()[0]
    blob = "x" * 16000
    deadline = time.monotonic() + 30
    n = 0
    while server.connections(user=user) and time.monotonic() < deadline:
        for _ in range(20):
            server.api("publish", {"channel": channel, "data": {"n": n, "blob": blob}})
            n += 1
    assert server.connections(user=user) == {}, "the slow client was not cut"
    # Whatever was buffered, then the farewell.
    assert slow.ending() == "close 3008"
    slow.close()
    assert_no_traceback(server)


# -- item 6: slow, idle and oversized HTTP requests -------------------------------------------------------


def health_time(server: Server) -> float:
    start = time.monotonic()
    response = requests.get(server.url + "/health", timeout=5)
    assert response.status_code == 200
    return time.monotonic() - start


def test_slowloris_and_idle_sockets_are_closed_and_health_stays_fast(server: Server) -> None:
    slow_count, idle_count = 150, 150

    async def scenario() -> None:
        async def slowloris(k: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            received = b""
            try:
                for line in range(40):  # far past the deadline unless the server ends it
                    read = asyncio.ensure_future(reader.read(4096))
                    done, _ = await asyncio.wait({read}, timeout=0.3)
                    if done:
                        received = read.result()
                        break
                    read.cancel()
                    writer.write(f"X-Slow-{line}: {k}\r\n".encode())
                    await writer.drain()
            except ConnectionError:
                pass
            writer.close()
            return received

        async def idle() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                return await asyncio.wait_for(reader.read(4096), 10)
            finally:
                writer.close()

        async def watch_health() -> list[float]:
            times = []
            for _ in range(15):
                times.append(await asyncio.to_thread(health_time, server))
                await asyncio.sleep(0.1)  # the sampling period of the measurement, not a wait
            return times

        started = time.monotonic()
        results = await asyncio.gather(
            *(slowloris(k) for k in range(slow_count)), *(idle() for _ in range(idle_count)), watch_health()
        )
        elapsed = time.monotonic() - started
        times = results[-1]
        slow_answers, idle_answers = results[:slow_count], results[slow_count:-1]
        assert all(a.startswith(b"HTTP/1.1 408") for a in slow_answers), {a[:20] for a in slow_answers}
        assert all(a == b"" for a in idle_answers)
        assert elapsed < 10, elapsed  # closed by the deadlines, long before the clients give up
        assert max(times) < 2.0, times

    run(scenario(), 60)


def test_keep_alive_socket_is_closed_after_the_idle_timeout(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert time.monotonic() - started < IDLE_TIMEOUT + 3


def test_half_sent_body_is_408(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = f"POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b"{")  # 1 of the 100 bytes declared
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("path", ["/api/publish", "/connection/uni_http_stream"])
def test_declared_body_over_the_limit_is_413_before_it_is_sent(server: Server, path: str) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT / 2) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".encode())
        # Answered at once: waiting for the body would end in 408 after the read timeout instead.
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_chunked_body_over_the_limit_is_413_as_it_passes(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HEAD_TIMEOUT / 2) as sock:
        sock.sendall(
            b"POST /connection/uni_http_stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(b"%x\r\n" % 70_000 + b" " * 70_000 + b"\r\n")  # over 65,536; no end chunk
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_pending_sockets_over_the_cap_get_503(tmp_path: Path) -> None:
    cap = 20
    extra = {"http_max_pending_connections": cap, "http_request_head_timeout": "30s"}
    with Server(tmp_path, shards=1, **extra) as srv:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(cap)]
        try:
            # No wait needed: the router accepts from its backlog in order, the held sockets first.
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as extra_sock:
                assert extra_sock.recv(4096).startswith(b"HTTP/1.1 503")
        finally:
            for sock in held:
                sock.close()
        wait_healthy(srv.url, timeout=5)
        assert "http_max_pending_connections" in srv.log()


def first_uni_message(server: Server, transport: str, body: str) -> tuple[dict[str, Any], bool]:
    """The first message of a unidirectional stream, and whether the stream ended after it."""
    if transport == "uni_sse":
        response = requests.get(
            server.url + "/connection/uni_sse", params={"cf_connect": body}, timeout=5, stream=True
        )
    else:
        response = requests.post(server.url + f"/connection/{transport}", data=body, timeout=5, stream=True)
    with response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:
            line = line.removeprefix(b"data: ").strip()
            if line.startswith(b"{"):
                message = json.loads(line)
                break
        ended = "disconnect" in message and all(not line.strip() for line in lines)
    return message, ended


@pytest.mark.parametrize("transport", ["uni_http_stream", "uni_sse", "uni_websocket"])
def test_nested_uni_connect_requests_end_cleanly(server: Server, transport: str) -> None:
    user = unique(f"nest-{transport}")
    token = make_token(user)
    deep_data = f'{{"token":"{token}","data":{nested(300)}}}'  # valid JSON, ignored by uni transports
    deep_subs = f'{{"token":"{token}","subs":{{"c":{nested(300)}}}}}'  # not a SubscribeRequest

    async def scenario() -> None:
        client = await WsClient.open(server.port, path="/connection/uni_websocket")
        await client.ws.send(deep_data)
        assert "connect" in await client.wait_for(lambda m: "connect" in m), client.inbox
        await client.close()
        client = await WsClient.open(server.port, path="/connection/uni_websocket")
        await client.ws.send(deep_subs)
        assert (await client.closed())[0] == 3501

    if transport == "uni_websocket":
        run(scenario(), 20)
    else:
        message, _ = first_uni_message(server, transport, deep_data)
        assert "connect" in message, message
        message, ended = first_uni_message(server, transport, deep_subs)
        assert message["disconnect"]["code"] == 3501 and ended, message
    wait_until_gone(server, user, timeout=3)
    assert_no_traceback(server)
