"""Users across nodes in Redis: the cluster-wide connection limit, the user → nodes index, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from broker.engine.redis_address import parse_address
from broker.engine.redis_clients import RedisShards, Timeouts
from broker.engine.redis_keys import RedisKeys
from broker.engine.redis_users import RedisUsers, holder_id, node_of
from tests.support.redis_server import RedisCluster, RedisServer
from tests.support.waiting import scaled


def run(scenario: Callable[[RedisUsers], Awaitable[None]], address: str) -> None:
    async def bounded() -> None:
        shards = RedisShards([parse_address(address)], Timeouts(1.0, 4.0))
        try:
            await asyncio.wait_for(scenario(RedisUsers(shards, RedisKeys("users-test"))), scaled(30))
        finally:
            await shards.close()

    asyncio.run(bounded())


async def limit_and_index(users: RedisUsers) -> None:
    a, b = holder_id("node-a", "boot-1"), holder_id("node-b", "boot-7")
    assert node_of(a) == "node-a"
    assert await users.connect("alice", a, limit=3, ttl=60)
    assert await users.connect("alice", a, limit=3, ttl=60)
    assert await users.connect("alice", b, limit=3, ttl=60)
    assert not await users.connect("alice", b, limit=3, ttl=60)  # three over both nodes
    assert await users.nodes_of("alice") == {"node-a": 2, "node-b": 1}
    await users.disconnect("alice", b)
    assert await users.nodes_of("alice") == {"node-a": 2}
    assert await users.connect("alice", b, limit=3, ttl=60)
    assert await users.connect("bob}{", a, limit=0, ttl=60)  # no limit; a name that needs escaping
    assert await users.nodes_of("bob}{") == {"node-a": 1}
    assert await users.nodes_of("nobody") == {}


def test_the_limit_holds_over_holders_and_the_index_names_their_nodes(flushed_redis: RedisServer):
    run(limit_and_index, f"127.0.0.1:{flushed_redis.port}")


def test_the_same_on_a_cluster(tmp_path: Path):
    with RedisCluster(tmp_path) as cluster:
        run(limit_and_index, cluster.address)


def test_what_a_holder_stops_refreshing_stops_counting(flushed_redis: RedisServer):
    async def scenario(users: RedisUsers) -> None:
        dead, alive = holder_id("dead", "x"), holder_id("alive", "y")
        assert await users.connect("carol", dead, limit=2, ttl=0.5)
        assert await users.connect("carol", alive, limit=2, ttl=0.5)
        assert not await users.connect("carol", alive, limit=2, ttl=0.5)
        for _ in range(4):
            await asyncio.sleep(0.25)
            assert await users.refresh(["carol"], alive, ttl=0.5) == 1
        assert await users.nodes_of("carol") == {"alive": 1}
        assert await users.connect("carol", alive, limit=2, ttl=0.5)  # the dead holder's slot is free

    run(scenario, f"127.0.0.1:{flushed_redis.port}")


def test_refresh_loads_its_script_again_after_redis_forgot_it(flushed_redis: RedisServer):
    async def scenario(users: RedisUsers) -> None:
        holder = holder_id("n", "b")
        assert await users.connect("dave", holder, limit=0, ttl=60)
        await users.shards.control.script_flush()
        assert await users.refresh([f"user-{i}" for i in range(2500)] + ["dave"], holder, ttl=60) == 2501
        assert await users.nodes_of("dave") == {"n": 1}

    run(scenario, f"127.0.0.1:{flushed_redis.port}")


def test_a_seats_next_life_takes_back_what_the_previous_counted(flushed_redis: RedisServer):
    async def scenario(users: RedisUsers) -> None:
        first, second = holder_id("n", "life-1"), holder_id("n", "life-2")
        assert await users.take_seat("n/0", first, ttl=60) == 0  # nothing before
        for user in ("erin", "frank"):
            assert await users.connect(user, first, limit=1, ttl=60)
            await users.seat_holds("n/0", user, True, ttl=60)
        assert await users.connect("grace", holder_id("other", "x"), limit=1, ttl=60)
        # The shard dies without counting out; its next life takes the seat.
        assert await users.take_seat("n/0", second, ttl=60) == 2
        assert await users.nodes_of("erin") == {} and await users.nodes_of("frank") == {}
        assert await users.nodes_of("grace") == {"other": 1}  # another seat's users are untouched
        assert await users.connect("erin", second, limit=1, ttl=60)
        await users.keep_seat("n/0", second, ["erin"], ttl=60)
        assert await users.take_seat("n/0", holder_id("n", "life-3"), ttl=60) == 1

    run(scenario, f"127.0.0.1:{flushed_redis.port}")
