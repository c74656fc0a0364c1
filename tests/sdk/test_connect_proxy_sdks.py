"""The official SDKs without a token: the connect proxy's backend names the user and sets meta; their
``rpc`` calls are answered by the RPC proxy's backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.common import PROTOCOLS, SHARDS, api, run, unique
from tests.sdk.scenarios import connected, open_client
from tests.support.backend import Backend
from tests.support.server import Server


def answer(path: str, body: Any) -> dict[str, Any]:
    if path == "/rpc":
        return {"result": {"data": {"method": body["method"], "got": body.get("data"), "user": body["user"]}}}
    return {"result": {"user": f"backend-{body['name']}", "meta": {"plan": "gold"}, "data": {"hi": 1}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Backend(answer) as backend:
        extra = {"proxy_connect_endpoint": backend.url("/connect"), "proxy_rpc_endpoint": backend.url("/rpc")}
        with Server(tmp_path_factory.mktemp("sdk-proxy"), shards=SHARDS, **extra) as srv:
            yield srv


@pytest.fixture(params=["js", "python"])
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_client_without_token_is_who_the_backend_says(server: Server, sdk: str, protocol: str) -> None:
    async def scenario() -> None:
        name = unique("app")
        async with contextlib.AsyncExitStack() as stack:
            client = await open_client(stack, sdk, server, "proxied", protocol, "", name=name)
            client_id = await connected(client)
            found = await api(server, "connections", {"user": f"backend-{name}"})
            assert list(found["connections"]) == [client_id]
            assert found["connections"][client_id]["state"]["meta"] == {"plan": "gold"}
            by_meta = await api(
                server, "connections", {"expression": f'meta.plan == "gold" && app_name == "{name}"'}
            )
            assert list(by_meta["connections"]) == [client_id]
            answer = await client.rpc("sum", {"a": 1})
            assert answer == {"method": "sum", "got": {"a": 1}, "user": f"backend-{name}"}

    run(scenario(), 60)
