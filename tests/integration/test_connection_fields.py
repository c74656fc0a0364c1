"""The connection fields of Centrifugo v6.3+ in ``connections`` and in CEL: when a connection started,
its last ping round trip, and the labels its token gave it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from broker.hashing import shard_for_user
from tests.integration.wsclient import WsClient, api, run
from tests.support.server import Server
from tests.support.tokens import make_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("fields"), shards=2, ping_interval="1s", pong_timeout="1s") as srv:
        yield srv


def test_connected_at_latency_and_labels(server: Server) -> None:
    async def scenario() -> None:
        before = int(time.time() * 1000)
        client = await WsClient.connected(
            server.port, make_token("fields-ann", labels={"region": "eu", "tier": "gold"})
        )
        after = int(time.time() * 1000)
        found = (await api(server, "connections", {"user": "fields-ann"}))["result"]["connections"]
        [(client_id, info)] = found.items()
        assert before - 1000 <= info["connected_at_ms"] <= after + 1000
        assert info["labels"] == {"region": "eu", "tier": "gold"}
        assert info["ping_pong_latency_ms"] == -1  # no ping answered yet
        # After a ping and its pong (every second here), the round trip is known.
        deadline = time.monotonic() + 5
        while True:
            found = (await api(server, "connections", {"user": "fields-ann"}))["result"]["connections"]
            if found[client_id]["ping_pong_latency_ms"] >= 0:
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.2)
        # The same fields as CEL variables.
        for expression in (
            'labels.region == "eu" && user == "fields-ann"',
            f'connected_at_ms >= {before - 1000} && ping_pong_latency_ms >= 0 && user == "fields-ann"',
        ):
            matched = (await api(server, "connections", {"expression": expression}))["result"]
            assert list(matched["connections"]) == [client_id], expression
        none = (await api(server, "connections", {"expression": 'labels.region == "us"'}))["result"]
        assert none["connections"] == {}
        await client.close()

    run(scenario())


def test_labels_that_are_not_strings_make_the_token_invalid(server: Server) -> None:
    async def scenario() -> None:
        client = await WsClient.open(server.port)
        await client.send_commands({"id": 1, "connect": {"token": make_token("fields-bad", labels={"n": 1})}})
        assert (await client.closed())[0] == 3500

    run(scenario())


def test_label_filter_alone_with_a_user_and_with_an_expression(server: Server) -> None:
    async def scenario() -> None:
        gold = {"key": "tier", "cmp": "eq", "val": "gold"}
        clients = {
            name: await WsClient.connected(server.port, make_token(name, labels=labels))
            for name, labels in (
                ("lf-a", {"tier": "gold", "region": "eu"}),
                ("lf-b", {"tier": "gold", "region": "us"}),
                ("lf-c", {"tier": "free"}),
                ("lf-d", {}),
            )
        }
        ids = {name: client.connect_result["client"] for name, client in clients.items()}

        async def listed(params: dict[str, object]) -> set[str]:
            answer = (await api(server, "connections", params))["result"]["connections"]
            return {cid for cid in answer if cid in ids.values()}

        assert await listed({"label_filter": gold}) == {ids["lf-a"], ids["lf-b"]}
        assert await listed({"user": "lf-b", "label_filter": gold}) == {ids["lf-b"]}
        assert await listed({"user": "lf-c", "label_filter": gold}) == set()
        europe = {"op": "and", "nodes": [gold, {"key": "region", "cmp": "sw", "val": "e"}]}
        assert await listed({"label_filter": europe}) == {ids["lf-a"]}
        assert await listed({"expression": 'user != "lf-a"', "label_filter": gold}) == {ids["lf-b"]}
        unlabelled = {"key": "tier", "cmp": "nex"}
        assert ids["lf-d"] in await listed({"label_filter": unlabelled})
        bad = await api(server, "connections", {"label_filter": {"key": "tier", "cmp": "~"}})
        assert bad["error"]["code"] == 107 and "label_filter" in bad["error"]["message"]
        for client in clients.values():
            await client.close()

    run(scenario())


def test_operations_targeted_by_labels_across_shards(server: Server) -> None:
    async def scenario() -> None:
        beta = {"key": "ring", "cmp": "eq", "val": "beta"}
        names = [f"lt-{n}" for n in range(6)]  # users spread over both shards
        clients = {
            name: await WsClient.connected(
                server.port, make_token(name, labels={"ring": "beta" if n % 2 else "stable"})
            )
            for n, name in enumerate(names)
        }
        betas = [name for n, name in enumerate(names) if n % 2]
        assert {shard_for_user(name, 2) for name in betas} == {0, 1}  # both shards take part
        # subscribe: every user's connections with the label, server-side.
        answer = await api(
            server, "subscribe", {"all_users": True, "label_filter": beta, "channel": "beta-news"}
        )
        assert answer.get("result") == {}, answer
        for name in betas:
            push = await clients[name].push("subscribe", "beta-news")
            assert push["channel"] == "beta-news"
        # One user's connections, narrowed by labels: nothing for a stable user.
        await api(server, "disconnect", {"user": "lt-0", "label_filter": beta})
        await asyncio.sleep(0.3)
        assert clients["lt-0"].is_open
        # disconnect: every connection with the label, and nothing else.
        await api(server, "disconnect", {"all_users": True, "label_filter": beta})
        for name in betas:
            assert (await clients[name].closed())[0] == 3503
        assert all(clients[name].is_open for name in names if name not in betas)
        without = (await api(server, "subscribe", {"channel": "x"}))["error"]
        assert without["code"] == 107 and without["message"] == "user required"
        for name in names:
            await clients[name].close()

    run(scenario())


def test_exclude_client_and_sort_by_connection_time(server: Server) -> None:
    """Switchboard extensions: a messenger's "your other sessions" list, newest first."""

    async def scenario() -> None:
        clients = []
        for _ in range(3):
            clients.append(await WsClient.connected(server.port, make_token("fields-sessions")))
            await asyncio.sleep(0.02)  # distinct connection times
        ids = [c.connect_result["client"] for c in clients]
        by_user = {"user": "fields-sessions"}
        newest_first = await api(server, "connections", {**by_user, "sort": "-connected_at_ms"})
        assert list(newest_first["result"]["connections"]) == ids[::-1]
        oldest_first = await api(server, "connections", {**by_user, "sort": "connected_at_ms", "limit": 2})
        assert list(oldest_first["result"]["connections"]) == ids[:2]
        assert oldest_first["result"]["total"] == 3
        others = await api(
            server, "connections", {**by_user, "exclude_client": ids[1], "sort": "connected_at_ms"}
        )
        assert list(others["result"]["connections"]) == [ids[0], ids[2]]
        # Across shards (an expression scans every shard), the merged answer is in order too.
        home = shard_for_user("fields-sessions", 2)
        elsewhere = next(
            u for u in (f"fields-elsewhere-{i}" for i in range(100)) if shard_for_user(u, 2) != home
        )
        await asyncio.sleep(0.02)
        clients.append(await WsClient.connected(server.port, make_token(elsewhere)))
        expression = f'user == "fields-sessions" || user == "{elsewhere}"'
        spread = await api(
            server, "connections", {"expression": expression, "sort": "-connected_at_ms", "limit": 2}
        )
        newest = clients[-1].connect_result["client"]
        assert list(spread["result"]["connections"]) == [newest, ids[2]] and spread["result"]["total"] == 4
        bad = await api(server, "connections", {**by_user, "sort": "user"})
        assert bad["error"]["code"] == 107
        for client in clients:
            await client.close()

    run(scenario())
