"""The RPC proxy against a real HTTP backend: a client's rpc answered by the backend, and its failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.wsclient import WsClient
from tests.support.backend import Backend, Reply
from tests.support.server import Server
from tests.support.tokens import make_token


def answer(path: str, body: Any) -> dict[str, Any] | Reply:
    method = body.get("method", "") if isinstance(body, dict) else ""
    if method == "echo":
        return {
            "result": {"data": {"echo": body.get("data"), "user": body["user"], "meta": body.get("meta")}}
        }
    if method == "fail":
        return {"error": {"code": 1001, "message": "nope"}}
    if method == "bye":
        return {"disconnect": {"code": 4502, "reason": "bye"}}
    if method == "slow":
        return Reply(delay=2.0)
    if method == "500":
        return Reply(status=500)
    return Reply(body=b"[1, 2")


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend(answer) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    extra = {
        "proxy_rpc_endpoint": backend.url("/rpc"),
        "proxy_rpc_timeout": "0.5s",
        "proxy_include_connection_meta": True,
        "proxy_static_http_headers": {"X-Static": "rpc"},
    }
    with Server(tmp_path_factory.mktemp("rpc-proxy"), shards=2, **extra) as srv:
        yield srv


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_rpc_is_answered_by_the_backend_with_the_connections_meta(server: Server, backend: Backend) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("rpc-user", meta={"plan": "gold"}))
        reply = await client.command("rpc", {"method": "echo", "data": {"q": 1}})
        assert reply["rpc"]["data"] == {"echo": {"q": 1}, "user": "rpc-user", "meta": {"plan": "gold"}}
        seen = [s for s in backend.seen if s.body.get("method") == "echo"][-1]
        assert seen.path == "/rpc" and seen.headers["x-static"] == "rpc"
        assert seen.body["transport"] == "websocket" and seen.body["protocol"] == "json"
        await client.close()

    run(scenario)


@pytest.mark.parametrize(("method", "code"), [("fail", 1001), ("slow", 100), ("500", 100), ("garbage", 100)])
def test_rpc_errors_and_failures_answer_that_command_only(server: Server, method: str, code: int) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("rpc-errors"))
        reply = await client.command("rpc", {"method": method, "data": {}})
        assert reply["error"]["code"] == code, reply
        # The connection goes on.
        assert (await client.command("rpc", {"method": "echo", "data": {}}))["rpc"]["data"][
            "user"
        ] == "rpc-errors"
        await client.close()

    run(scenario)


def test_rpc_disconnect_closes_the_connection(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token("rpc-bye"))
        await client.send_commands({"id": client.next_id(), "rpc": {"method": "bye", "data": {}}})
        assert await client.closed() == (4502, "bye")

    run(scenario)
