"""The official SDKs against three nodes of two shards each on one redis-server (the Redis engine).

Clients of both libraries, each on another node, publish to one history channel and all see one
sequence with the same offsets; presence asked through the SDK lists the subscribers of every node;
a client that reconnects after missing publications made on other nodes recovers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from broker.hashing import writer_for
from tests.sdk import scenarios
from tests.sdk.common import SHARDS, api, connection_token, run, unique
from tests.sdk.scenarios import connected, numbers_received, open_client, subscribed
from tests.support import redis_server as redis_support
from tests.support.balancer import Balancer
from tests.support.redis_server import RedisCluster, RedisServer, command
from tests.support.server import Server
from tests.support.waiting import eventually

NODES = 3


@contextlib.contextmanager
def nodes_on(tmp: Path, address: str, count: int, prefix: str) -> Iterator[list[Server]]:
    """``count`` nodes of SHARDS shards on the Redis at ``address``, each seeing the others; stopped after."""
    config: dict[str, Any] = {
        **scenarios.FEATURES_EXTRA,
        "engine": "redis",
        "redis_address": address,
        "node_info_interval": "0.5s",
    }
    nodes: list[Server] = []
    try:
        for i in range(count):
            nodes.append(Server(tmp, shards=SHARDS, name=f"{prefix}-{i}", **config).start())
        eventually(
            lambda: all(len(n.api("info", {})["result"]["nodes"]) == count for n in nodes),
            timeout=10,
            what="every node to see the others",
        )
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    if not redis_support.available():
        pytest.fail("redis-server is missing: make test installs it (make services)")
    tmp = tmp_path_factory.mktemp("sdk-nodes")
    with RedisServer(tmp / "redis") as redis, nodes_on(tmp, redis.address, NODES, "sdk-node") as nodes:
        yield nodes


@pytest.fixture(params=["js", "python"])
def sdk(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _one_order_from_publishers_on_every_node(nodes: list[Server], sdk: str) -> None:
    channel = unique("hist:nodes")
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i, node in enumerate(nodes):
            library = sdk if i != 1 else ("python" if sdk == "js" else "js")  # both libraries at once
            client = await open_client(
                stack, library, node, f"node{i}", "json", connection_token(unique("u"))
            )
            await connected(client)
            await client.subscribe(channel, recoverable=True)
            await subscribed(client, channel)
            clients.append(client)
        for n in range(12):
            await clients[n % NODES].publish(channel, {"n": n})
        sequences = []
        for client in clients:
            received = await numbers_received(client, channel, 12)
            sequences.append([(p["data"]["n"], p["offset"]) for p in received])
        assert sequences[0] == sequences[1] == sequences[2], sequences
        assert sorted(n for n, _ in sequences[0]) == list(range(12))
        offsets = [offset for _, offset in sequences[0]]
        assert offsets == list(range(offsets[0], offsets[0] + 12)), offsets


def test_publishers_on_every_node_one_order_everywhere(cluster: list[Server], sdk: str) -> None:
    run(_one_order_from_publishers_on_every_node(cluster, sdk), 90)


async def _presence_of_every_node(nodes: list[Server], sdk: str) -> None:
    channel = unique("room:nodes")
    users = [unique("p") for _ in nodes]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for i, node in enumerate(nodes):
            client = await open_client(stack, sdk, node, f"node{i}", "json", connection_token(users[i]))
            await connected(client)
            await client.subscribe(channel)
            await subscribed(client, channel)
            clients.append(client)
        for client in clients:
            found = await client.presence(channel)
            assert sorted(entry["user"] for entry in found.values()) == sorted(users), found
            assert await client.presence_stats(channel) == {"num_clients": 3, "num_users": 3}


def test_presence_through_the_sdk_lists_every_node(cluster: list[Server], sdk: str) -> None:
    run(_presence_of_every_node(cluster, sdk), 90)


async def _recovery_of_publications_made_elsewhere(nodes: list[Server], sdk: str) -> None:
    channel = unique("hist:away")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, nodes[0], "away", "json", connection_token(unique("r")))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        await api(nodes[1], "publish", {"channel": channel, "data": {"n": 0}})
        await numbers_received(client, channel, 1)
        await client.disconnect()
        gone = await client.log.wait("disconnected")
        after = client.log.events.index(gone) + 1
        for n in range(1, 11):
            await api(nodes[n % NODES], "publish", {"channel": channel, "data": {"n": n}})
        await client.connect()
        again = await client.log.wait("subscribed", channel=channel, server_side=False, start=after)
        assert again["recovered"] is True and again["epoch"] == first["epoch"], again
        received = await numbers_received(client, channel, 11)
        assert [p["data"]["n"] for p in received] == list(range(11))


def test_a_client_recovers_publications_made_on_other_nodes(cluster: list[Server], sdk: str) -> None:
    run(_recovery_of_publications_made_elsewhere(cluster, sdk), 90)


# -- faults: a node killed, Redis restarted ------------------------------------------------------------


async def _publish_numbers_slowly(node: Server, channel: str, count: int) -> None:
    for n in range(count):
        await api(node, "publish", {"channel": channel, "data": {"n": n}})
        await asyncio.sleep(0.01)


async def _clients_move_when_their_node_dies(nodes: list[Server], balancer: Balancer, sdk: str) -> None:
    channel = unique("hist:killed")
    front = cast(Server, SimpleNamespace(port=balancer.port))
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, front, "moving", "json", connection_token(unique("m")))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        await subscribed(client, channel)
        publishing = asyncio.create_task(_publish_numbers_slowly(nodes[1], channel, 150))
        await numbers_received(client, channel, 20, timeout=30)
        await asyncio.to_thread(nodes[0].kill_tree)  # the client's node, mid-publish
        await publishing
        received = await numbers_received(client, channel, 150, timeout=30)
        assert [p["data"]["n"] for p in received] == list(range(150)), client.log.describe()
        offsets = [p["offset"] for p in received]
        assert offsets == list(range(offsets[0], offsets[0] + 150))
        moved = client.log.all("subscribed", channel=channel)
        assert len(moved) >= 2 and moved[-1]["recovered"] is True, moved


def test_clients_of_a_killed_node_move_and_recover_everything(tmp_path: Path, sdk: str) -> None:
    with (
        RedisServer(tmp_path / "redis") as redis,
        nodes_on(tmp_path, redis.address, 2, "kill") as nodes,
        Balancer([node.port for node in nodes]) as balancer,
    ):
        run(_clients_move_when_their_node_dies(nodes, balancer, sdk), 120)


async def _publications_resume_after_redis_restarts(
    nodes: list[Server], redis: RedisServer, sdk: str
) -> None:
    channel = unique("hist:redis")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, nodes[0], "staying", "json", connection_token(unique("s")))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        first = await client.log.wait("subscribed", channel=channel, server_side=False)
        for n in range(5):
            await api(nodes[1], "publish", {"channel": channel, "data": {"n": n}})
        await numbers_received(client, channel, 5)
        await asyncio.to_thread(redis.kill)
        failed = await asyncio.to_thread(nodes[1].api, "publish", {"channel": channel, "data": {"n": -1}})
        assert failed["error"]["code"] == 100, failed
        await asyncio.to_thread(redis.start)
        # Nodes subscribe again; publishing works again within a few reconnect delays.
        for _attempt in range(50):
            answer = await asyncio.to_thread(nodes[1].api, "publish", {"channel": channel, "data": {"n": 5}})
            if "result" in answer:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"publishing did not come back: {answer}")
        for n in range(6, 10):
            await api(nodes[1], "publish", {"channel": channel, "data": {"n": n}})
        received = await numbers_received(client, channel, 10, timeout=30)
        assert [p["data"]["n"] for p in received] == list(range(10)), client.log.describe()
        # The stream survived (append-only file): same epoch, and the client never had to leave.
        assert not client.log.all("disconnected"), client.log.describe()
        subscriptions = client.log.all("subscribed", channel=channel)
        assert all(s["epoch"] == first["epoch"] for s in subscriptions), subscriptions


def test_publications_resume_after_redis_restarts(tmp_path: Path, sdk: str) -> None:
    persistent = RedisServer(tmp_path / "redis", None, "--appendonly", "yes", "--appendfsync", "always")
    with persistent as redis, nodes_on(tmp_path, redis.address, 2, "restart") as nodes:
        run(_publications_resume_after_redis_restarts(nodes, redis, sdk), 120)


# -- the same on a Redis Cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three nodes on a three-master Redis Cluster."""
    tmp = tmp_path_factory.mktemp("sdk-cluster")
    with RedisCluster(tmp / "cluster") as redis, nodes_on(tmp, redis.address, NODES, "cluster-node") as nodes:
        yield nodes


def test_one_order_everywhere_on_a_redis_cluster(on_redis_cluster: list[Server], sdk: str) -> None:
    run(_one_order_from_publishers_on_every_node(on_redis_cluster, sdk), 90)


def test_recovery_on_a_redis_cluster(on_redis_cluster: list[Server], sdk: str) -> None:
    run(_recovery_of_publications_made_elsewhere(on_redis_cluster, sdk), 90)


async def _positioned_clients_recover_what_a_lost_link_missed(
    nodes: list[Server], redis: RedisServer, sdk: str
) -> None:
    channel = unique("hist:gap")
    async with contextlib.AsyncExitStack() as stack:
        client = await open_client(stack, sdk, nodes[0], "gapped", "json", connection_token(unique("g")))
        await connected(client)
        await client.subscribe(channel, recoverable=True)
        await subscribed(client, channel)
        publishing = asyncio.create_task(_publish_numbers_slowly(nodes[1], channel, 120))
        await numbers_received(client, channel, 20, timeout=30)
        # Every node's PUB/SUB connection is cut: publications made before each link is back are lost
        # on the way; the shards see the gap (or check their positions) and the client recovers.
        killed = await asyncio.to_thread(command, redis.port, "CLIENT", "KILL", "TYPE", "pubsub")
        assert killed.startswith(b":") and int(killed[1:]) >= 2, killed
        await publishing
        received = await numbers_received(client, channel, 120, timeout=30)
        assert [p["data"]["n"] for p in received] == list(range(120)), client.log.describe()


def test_positioned_clients_recover_what_a_lost_redis_link_missed(cluster: list[Server], sdk: str) -> None:
    # The module's nodes and their redis-server (the fixture's): its port is in the nodes' config.
    port = int(str(cluster[0].config["redis_address"]).rsplit(":", 1)[1])
    redis = cast(RedisServer, SimpleNamespace(port=port))
    run(_positioned_clients_recover_what_a_lost_link_missed(cluster, redis, sdk), 120)


async def _nothing_lost_when_the_writer_is_killed(nodes: list[Server], sdk: str) -> None:
    """On Redis the stream outlives its writer shard: recoverable subscribers are told (2500) and
    recover, and every publication made after the restart reaches them, once and in order."""
    node = nodes[0]
    channel = next(n for n in (unique("hist:writer") for _ in range(1000)) if writer_for(n, SHARDS) == 1)
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for n in range(3):
            user = scenarios._user_on(0, f"{sdk}-writer{n}")
            client = await open_client(stack, sdk, node, f"w{n}", "json", connection_token(user))
            await connected(client)
            await client.subscribe(channel, recoverable=True)
            await subscribed(client, channel)
            clients.append(client)
        offsets = await scenarios.publish_numbers(node, channel, range(1))
        pid = (await asyncio.to_thread(node.shard_pids))[1]
        os.kill(pid, signal.SIGKILL)
        await scenarios._writer_restarted(node, 1, pid)
        offsets += await scenarios.publish_numbers(nodes[1], channel, range(1, 21))
        assert offsets == list(range(offsets[0], offsets[0] + 21))  # the same stream, no new epoch
        for client in clients:
            received = await numbers_received(client, channel, 21, timeout=30)
            scenarios.assert_exactly_once_in_order(client, received, list(range(21)), offsets)


def test_nothing_is_lost_when_a_channels_writer_shard_is_killed(cluster: list[Server], sdk: str) -> None:
    run(_nothing_lost_when_the_writer_is_killed(cluster, sdk), 120)
