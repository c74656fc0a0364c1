"""``connections`` by user answered by the router from the shards' shared memory: the same answer the
shard gives, current under churn, and never trusted from a shard that stopped or died."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.wsclient import WsClient, run, users_on_shards
from tests.support.server import Server
from tests.support.tokens import make_token, subscription_token
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {"allow_subscribe_for_client": True, "api_shard_timeout": "1s"}
    with Server(tmp_path_factory.mktemp("user-index"), shards=2, **config) as srv:
        yield srv


def by_user(server: Server, user: str, **extra: Any) -> dict[str, Any]:
    answer = server.api("connections", {"user": user, **extra})
    assert "result" in answer, answer
    return dict(answer["result"]["connections"])


def from_shard(server: Server, user: str) -> dict[str, Any]:
    """The same question put to the shard itself (an expression is always evaluated there)."""
    return by_user(server, user, expression="true")


def test_answers_equal_the_shards_own(server: Server) -> None:
    ann, bob = users_on_shards("same-answer")

    async def scenario() -> None:
        clients = [
            await WsClient.connected(server.port, make_token(ann, jti="ann-1", meta={"plan": "pro"})),
            await WsClient.connected(server.port, make_token(ann, channels=["news"], labels={"os": "ios"})),
            await WsClient.connected(server.port, make_token(bob)),
        ]
        await clients[0].subscribe("room")
        await clients[0].subscribe("$private", token=subscription_token(ann, "$private", jti="sub-1"))
        try:
            for user, count in ((ann, 2), (bob, 1)):
                answer = by_user(server, user)
                assert len(answer) == count
                assert answer == from_shard(server, user)
            first = by_user(server, ann)[clients[0].connect_result["client"]]
            assert set(first["state"]["channels"]) == {"room", "$private"}
            assert first["state"]["meta"] == {"plan": "pro"}
            # The extensions are shaped by the router as the shard shapes them.
            for extra in (
                {"sort": "-connected_at_ms"},
                {"limit": 1},
                {"exclude_client": clients[0].connect_result["client"]},
            ):
                assert server.api("connections", {"user": ann, **extra}) == server.api(
                    "connections", {"user": ann, "expression": "true", **extra}
                )
            await clients[0].command("unsubscribe", {"channel": "room"})
            assert set(by_user(server, ann)[clients[0].connect_result["client"]]["state"]["channels"]) == {
                "$private"
            }
        finally:
            for client in clients:
                await client.close()
        eventually(lambda: by_user(server, ann) == {} and by_user(server, bob) == {}, timeout=5, what="gone")

    run(scenario())


def test_under_churn_open_connections_are_listed_and_closed_ones_leave(server: Server) -> None:
    users = users_on_shards("churn") * 2

    async def scenario() -> None:
        late: list[float] = []
        for cycle in range(60):
            user = users[cycle % len(users)]
            client = await WsClient.connected(server.port, make_token(user))
            client_id = client.connect_result["client"]
            listed = await asyncio.to_thread(by_user, server, user)
            assert client_id in listed, (cycle, listed)  # listed as soon as the client is connected
            await client.close()
            closed_at = time.monotonic()
            while client_id in await asyncio.to_thread(by_user, server, user):
                assert time.monotonic() - closed_at < 2.0, "a closed connection still listed after 2 s"
                await asyncio.sleep(0.01)
            late.append(time.monotonic() - closed_at)
        assert max(late) < 2.0

    run(scenario(), timeout=120)


def test_a_stopped_shard_is_read_only_until_its_heartbeat_is_stale(server: Server) -> None:
    user = users_on_shards("stopped")[1]

    async def scenario() -> None:
        client = await WsClient.connected(server.port, make_token(user))
        pid = server.shard_pids()[1]
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            listed = await asyncio.to_thread(by_user, server, user)  # from shared memory, at once
            assert client.connect_result["client"] in listed
            assert time.monotonic() - started < 0.5
            await asyncio.sleep(3.5)  # past the heartbeat's age limit: the shard must be asked, and is silent
            answer = await asyncio.to_thread(server.api, "connections", {"user": user})
            assert answer["error"]["code"] == 100, answer
        finally:
            os.kill(pid, signal.SIGCONT)
        listed = eventually(lambda: by_user(server, user), timeout=10, what="the shard to answer again")
        assert client.connect_result["client"] in listed
        await client.close()

    run(scenario())
    server.wait_ready()


def test_after_kill_9_of_a_shard_its_dead_connections_are_not_listed(server: Server) -> None:
    user = users_on_shards("killed")[0]

    async def scenario() -> str:
        client = await WsClient.connected(server.port, make_token(user))
        os.kill(server.shard_pids()[0], signal.SIGKILL)
        await client.closed(timeout=5)
        return str(client.connect_result["client"])

    dead = run(scenario())
    listed = eventually(
        lambda: by_user(server, user),
        until=lambda found: dead not in found,
        timeout=15,
        what="the dead connection to leave the by-user answer",
        retry_on=(AssertionError, OSError),
    )
    assert listed == {}
    server.wait_ready()

    async def again() -> None:
        client = await WsClient.connected(server.port, make_token(user))
        assert list(by_user(server, user)) == [client.connect_result["client"]]
        assert by_user(server, user) == from_shard(server, user)
        await client.close()

    run(again())
