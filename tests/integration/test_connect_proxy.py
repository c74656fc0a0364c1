"""The connect proxy against a real HTTP backend: who the client becomes, and every way the call fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from broker.hashing import shard_for_user
from tests.integration.streamclient import StreamClient
from tests.integration.wsclient import WsClient
from tests.support.backend import Backend, Reply
from tests.support.server import Server
from tests.support.tokens import make_token


def answer(path: str, body: Any) -> dict[str, Any] | Reply:
    """The backend's decision, by the client's app name (the test picks the case)."""
    name = body.get("name", "") if isinstance(body, dict) else ""
    if name == "error":
        return {"error": {"code": 1000, "message": "custom"}}
    if name == "disconnect":
        return {"disconnect": {"code": 4501, "reason": "go away"}}
    if name == "nobody":
        return {"result": {}}
    if name == "slow":
        return Reply(delay=2.0)
    if name == "500":
        return Reply(status=500)
    if name == "garbage":
        return Reply(body=b"not json")
    if name == "bad-shape":
        return {"result": {"user": 42}}
    user = f"proxied-{name}"
    return {
        "result": {
            "user": user,
            "info": {"role": "member"},
            "data": {"welcome": user},
            "channels": ["news"],
            "meta": {"tenant": "acme", "secret": "server-only"},
            "labels": {"via": "proxy"},
            "expire_at": int(time.time()) + 3600,
        }
    }


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend(answer) as running:
        yield running


@pytest.fixture(scope="module", params=["router", "shard"])
def server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """Both placements of the call: the router, or a shard that hands the socket on to the user's."""
    extra = {
        "proxy_connect_placement": request.param,
        "proxy_connect_endpoint": backend.url("/connect"),
        "proxy_connect_timeout": "0.5s",
        "proxy_http_headers": ["Cookie", "X-Real-Ip"],
        "proxy_emulated_headers": ["X-App", "X-Real-Ip"],
        "proxy_static_http_headers": {"X-Static": "yes"},
        "http_stream": True,
    }
    with Server(tmp_path_factory.mktemp("connect-proxy"), shards=2, **extra) as srv:
        yield srv


async def ws_connect(server: Server, name: str, **connect: Any) -> tuple[WsClient, dict[str, Any]]:
    client = await WsClient.open(server.port, headers={"Cookie": "session=abc"})
    reply = await client.connect("", name=name, **connect)
    return client, reply


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def seen_by_name(backend: Backend, name: str) -> list[Any]:
    return [s for s in backend.seen if isinstance(s.body, dict) and s.body.get("name") == name]


def test_a_client_without_token_becomes_the_user_the_backend_names(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client, reply = await ws_connect(server, "alice", data={"hello": 1}, headers={"X-App": "web"})
        result = reply["connect"]
        assert result["data"] == {"welcome": "proxied-alice"}
        assert b"server-only" not in orjson.dumps(reply)  # meta never reaches a client
        seen = seen_by_name(backend, "alice")[-1]  # the backend serves both placements
        assert seen.path == "/connect"
        assert seen.body["client"] == result["client"] and seen.body["transport"] == "websocket"
        assert seen.body["protocol"] == "json" and seen.body["encoding"] == "json"
        assert seen.body["data"] == {"hello": 1}
        assert "token" not in seen.body and "user" not in seen.body
        assert seen.headers["cookie"] == "session=abc" and seen.headers["x-app"] == "web"
        assert seen.headers["x-static"] == "yes"
        found = await asyncio.to_thread(server.connections, user="proxied-alice")
        [info] = found.values()
        assert info["state"]["meta"] == {"tenant": "acme", "secret": "server-only"}
        assert info["labels"] == {"via": "proxy"}  # the v6 connect proxy field
        assert info["state"]["channels"]["news"] == {"source": 2}  # a connect proxy subscription
        expression = 'meta.tenant == "acme" && user == "proxied-alice"'
        assert set(await asyncio.to_thread(server.connections, expression=expression)) == set(found)
        # Placed on the user's shard, where connections by user look.
        shards = (await asyncio.to_thread(server.api, "info", {}))["result"]["nodes"][0]["shards"]
        assert shards[shard_for_user("proxied-alice", 2)]["num_users"] >= 1
        await client.close()

    run(scenario)


def test_spoofed_and_unlisted_headers_never_reach_the_backend(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client, _ = await ws_connect(
            server, "spoofer", headers={"X-Real-Ip": "6.6.6.6", "Authorization": "x"}
        )
        seen = seen_by_name(backend, "spoofer")[-1]
        # X-Real-Ip is allowed as emulated, but it is a client address: never taken from emulation.
        assert "x-real-ip" not in seen.headers and "authorization" not in seen.headers
        await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("name", "code"), [("error", 1000), ("slow", 100), ("500", 100), ("garbage", 100), ("bad-shape", 100)]
)
def test_errors_and_failures_answer_the_connect(server: Server, name: str, code: int) -> None:
    async def scenario() -> None:
        client, reply = await ws_connect(server, name)
        assert reply["error"]["code"] == code, reply
        await client.close()
        # The process goes on: a good client right after.
        again, good = await ws_connect(server, f"after-{name}")
        assert good["connect"]["data"] == {"welcome": f"proxied-after-{name}"}
        await again.close()

    run(scenario)


def test_disconnect_and_no_credentials_close_the_connection(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.open(server.port)
        await client.send_commands({"id": 1, "connect": {"name": "disconnect"}})
        assert await client.closed() == (4501, "go away")
        client = await WsClient.open(server.port)
        await client.send_commands({"id": 1, "connect": {"name": "nobody"}})
        assert (await client.closed())[0] == 3501

    run(scenario)


def test_a_client_with_a_token_skips_the_proxy(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        before = len(backend.seen)
        client = await WsClient.open(server.port)
        reply = await client.connect(make_token("tokened"), name="alice")
        assert "connect" in reply and len(backend.seen) == before
        await client.close()

    run(scenario)


def test_uni_and_emulated_streams_go_through_the_proxy(server: Server, backend: Backend) -> None:
    uni = StreamClient(server.port, {"name": "unistream"})
    assert uni.connect()["data"] == {"welcome": "proxied-unistream"}
    assert seen_by_name(backend, "unistream")[-1].body["transport"] == "uni_http_stream"
    assert len(server.connections(user="proxied-unistream")) == 1
    uni.close()
    refused = StreamClient(server.port, {"name": "disconnect"})
    assert refused.read_until("disconnect")["disconnect"] == {"code": 4501, "reason": "go away"}
