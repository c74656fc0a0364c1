"""Pipelined server API requests on one keep-alive connection: run side by side, answered in order, and
publications to one channel delivered in request order (router + 2 shards, memory and Redis modes share
the router code; the memory engine is the one started here)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("pipelining"), shards=2, allow_subscribe_for_client=True) as srv:
        yield srv


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    deadline = time.monotonic() + timeout
    buffer = b""
    answers: list[tuple[int, bytes]] = []
    while len(answers) < count:
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].decode("latin-1").split("\r\n")
            length = next(int(h.split(":")[1]) for h in head if h.lower().startswith("content-length"))
            if len(buffer) < end + 4 + length:
                break
            answers.append((int(head[0].split()[1]), buffer[end + 4 : end + 4 + length]))
            buffer = buffer[end + 4 + length :]
        if len(answers) >= count:
            break
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        buffer += chunk
    return answers


def test_pipelined_requests_are_answered_in_order_and_publications_keep_theirs(server: Server) -> None:
    channel = f"pipe-{uuid.uuid4().hex[:6]}"

    async def scenario() -> None:
        clients = []
        for user in users_on_shards("pipe"):
            client = await WsClient.connected(server.port, make_token(user))
            assert "subscribe" in await client.subscribe(channel)
            clients.append(client)
        batch = []
        expected: list[tuple[int, bytes | None]] = []
        for i in range(30):
            batch.append(
                request("POST", "/api/publish", orjson.dumps({"channel": channel, "data": {"i": i}}))
            )
            expected.append((200, b'{"result":{}}'))
            if i == 10:
                batch.append(request("GET", "/health"))  # an ordinary request among them waits its turn
                expected.append((200, b"{}"))
            if i == 20:
                batch.append(request("POST", "/api/no_such_method", b"{}"))
                expected.append((404, b"404 page not found"))
                batch.append(request("POST", "/api/publish", b'{"channel": ""}'))
                expected.append((200, None))  # an error reply, in its place
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"".join(batch))  # one write: every request is in the router's first read
            answers = await asyncio.to_thread(read_responses, sock, len(expected))
            # The connection goes on serving afterwards.
            sock.sendall(request("POST", "/api/info", b"{}"))
            (status, body), *_ = await asyncio.to_thread(read_responses, sock, 1)
            assert status == 200 and b'"nodes"' in body
        for (status, body), (want_status, want_body) in zip(answers, expected, strict=True):
            assert status == want_status
            if want_body is None:
                assert b'"error"' in body
            else:
                assert body == want_body
        for client in clients:
            seen = [(await client.push("pub", channel))["pub"]["data"]["i"] for _ in range(30)]
            assert seen == list(range(30))
        for client in clients:
            await client.close()

    run(scenario())


def test_many_pipelined_requests_beyond_the_limit_are_all_answered(server: Server) -> None:
    count = 300  # past MAX_PIPELINED: reading pauses and resumes
    payload = b"".join(request("POST", "/api/info", b"{}") for _ in range(count))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        answers = read_responses(sock, count, timeout=30)
    assert all(status == 200 and b'"nodes"' in body for status, body in answers)
