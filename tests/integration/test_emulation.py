"""http_stream and SSE with /emulation on raw sockets: the wire as the SDKs see it, and bad input."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
import requests

from broker.hashing import shard_for_user
from broker.protocol.proto import client_pb2
from tests.support.server import Server
from tests.support.tokens import make_token
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = {"http_stream": True, "sse": True, "allow_subscribe_for_client": True, "presence": True}
    with Server(tmp_path_factory.mktemp("emulation"), shards=2, **extra) as srv:
        yield srv


class Stream:
    """One emulation stream on a raw socket; ``received`` is everything read so far."""

    def __init__(self, server: Server, user: str, path: str = "/connection/http_stream") -> None:
        body = orjson.dumps({"id": 1, "connect": {"token": make_token(user)}})
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        if path.endswith("/sse"):
            query = requests.utils.quote(body.decode())
            self.sock.sendall(f"GET {path}?cf_connect={query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        else:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            self.sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.received = b""

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.received:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"stream ended before {marker!r}: {self.received!r}")
            self.received += chunk
        return self.received

    def session(self) -> tuple[str, str]:
        found = re.search(rb'"session":"([^"]+)","node":"([^"]+)"', self.read_until(b'"node"'))
        assert found is not None
        return found.group(1).decode(), found.group(2).decode()


def emulate(server: Server, session: str, node: str, command: dict[str, object]) -> int:
    body = {"session": session, "node": node, "data": orjson.dumps(command).decode()}
    return requests.post(f"{server.url}/emulation", data=orjson.dumps(body), timeout=5).status_code


def test_http_stream_session_names_its_shard_and_emulation_reaches_it(server: Server) -> None:
    user = "emu-wire"
    stream = Stream(server, user)
    session, node = stream.session()
    assert session.startswith(f"{shard_for_user(user, 2)}-")
    assert stream.received.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    assert emulate(server, session, node, {"id": 2, "subscribe": {"channel": "wire"}}) == 204
    stream.read_until(b'{"id":2,"subscribe":{}}\n')
    server.api("publish", {"channel": "wire", "data": {"x": 1}})
    stream.read_until(b'{"push":{"channel":"wire","pub":{"data":{"x":1}}}}\n')
    assert emulate(server, session, node, {}) == 204  # a pong
    info = server.connections(user=user)
    assert [c["transport"] for c in info.values()] == ["http_stream"]
    stream.sock.close()
    eventually(lambda: server.connections(user=user) == {}, timeout=5, what="the stream's session to end")
    # A session that ended on a running node: 204, and nothing happens anywhere.
    assert emulate(server, session, node, {"id": 3, "subscribe": {"channel": "wire"}}) == 204


def test_sse_stream_and_protobuf_emulation_request(server: Server) -> None:
    stream = Stream(server, "emu-sse", "/connection/sse")
    session, node = stream.session()
    assert b"Content-Type: text/event-stream" in stream.received
    assert b'data: {"id":1,"connect":' in stream.received
    request = client_pb2.EmulationRequest(  # type: ignore[attr-defined]
        session=session, node=node, data=orjson.dumps({"id": 2, "subscribe": {"channel": "sse-wire"}})
    )
    answer = requests.post(
        f"{server.url}/emulation",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=5,
    )
    # The stream is JSON: the frame inside a Protobuf envelope is still the session's JSON command.
    assert answer.status_code == 204
    stream.read_until(b'data: {"id":2,"subscribe":{}}\n\n')
    stream.sock.close()


def test_bad_emulation_requests_get_their_status_and_touch_no_session(server: Server) -> None:
    stream = Stream(server, "emu-bad")
    session, node = stream.session()
    url = f"{server.url}/emulation"
    assert requests.post(url, data=b"not json", timeout=5).status_code == 400
    assert requests.post(url, data=b"[]", timeout=5).status_code == 400
    assert (
        requests.post(url, data=orjson.dumps({"session": 1, "node": "", "data": ""}), timeout=5).status_code
        == 400
    )
    bad_proto = {"Content-Type": "application/octet-stream"}
    assert requests.post(url, data=b"\xff\xff\xff", headers=bad_proto, timeout=5).status_code == 400
    assert emulate(server, session, "another-node", {"id": 2, "subscribe": {"channel": "x"}}) == 404
    assert emulate(server, "garbage", node, {}) == 204
    assert emulate(server, "99-" + session, node, {}) == 204  # no such shard: no such session
    assert requests.post(url, data=b"x" * 70_000, timeout=5).status_code == 413
    assert requests.get(url, timeout=5).status_code == 405
    assert requests.options(url, timeout=5).status_code == 204
    # A command the session cannot take ends that session alone, with its code on its stream.
    assert emulate(server, session, node, {"id": 2, "bogus": {}}) == 204
    stream.read_until(b'"disconnect":{"code":3501')
    time.sleep(0.2)
    assert server.connections(user="emu-bad") == {}
    healthy = Stream(server, "emu-after")
    assert healthy.session()[0]
    healthy.sock.close()
