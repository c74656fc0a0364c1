"""The Redis broker where Redis matters: a lost connection comes back subscribed, and says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker.engine.redis_address import parse_address
from broker.engine.redis_broker import RedisBroker
from broker.engine.redis_clients import RedisShards, Timeouts
from broker.engine.redis_keys import RedisKeys
from broker.publication import Publication
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually_async, scaled


class Node:
    def __init__(self) -> None:
        self.publications: list[bytes] = []
        self.resubscribed: list[int] = []

    def on_publication(self, publication: Publication) -> None:
        self.publications.append(publication.data)

    def on_control(self, data: bytes) -> None:
        del data

    def on_resubscribed(self, count: int) -> None:
        self.resubscribed.append(count)


def test_after_redis_restarts_the_link_resubscribes_and_reports_it(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as redis:

        async def scenario() -> None:
            shards = RedisShards([parse_address(redis.address)], Timeouts(0.5, 1.0))
            broker, node = RedisBroker(shards, RedisKeys("b")), Node()
            broker.start("n1", node)
            await broker.wait_connected(5)
            await broker.subscribe("news")
            await broker.subscribe("sport")
            await broker.publish(Publication("news", b"before"))
            await eventually_async(lambda: node.publications == [b"before"], timeout=5, what="delivery")
            await asyncio.to_thread(redis.restart)
            await eventually_async(lambda: node.resubscribed == [2], timeout=10, what="the resubscription")
            await broker.publish(Publication("sport", b"after"))
            await eventually_async(lambda: node.publications[-1:] == [b"after"], timeout=5, what="delivery")
            await broker.close()
            await shards.close()

        asyncio.run(asyncio.wait_for(scenario(), scaled(60)))


def test_a_subscription_asked_while_redis_is_down_is_made_when_it_returns(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as redis:

        async def scenario() -> None:
            shards = RedisShards([parse_address(redis.address)], Timeouts(0.5, 1.0))
            broker, node = RedisBroker(shards, RedisKeys("b")), Node()
            broker.start("n1", node)
            await broker.wait_connected(5)
            await asyncio.to_thread(redis.stop)
            try:
                await broker.subscribe("late")
                raise AssertionError("a subscription confirmed while Redis is down")
            except TimeoutError:
                pass  # bounded by redis_io_timeout; the link keeps it for the reconnect
            await asyncio.to_thread(redis.start)
            await broker.wait_connected(10)
            await eventually_async(lambda: node.resubscribed != [], timeout=10, what="the resubscription")
            await broker.publish(Publication("late", b"now"))
            await eventually_async(lambda: node.publications == [b"now"], timeout=5, what="delivery")
            await broker.close()
            await shards.close()

        asyncio.run(asyncio.wait_for(scenario(), scaled(60)))


def test_a_subscription_asked_while_the_link_is_still_connecting_is_made(tmp_path: Path):
    with RedisServer(tmp_path / "redis") as redis:

        async def scenario() -> None:
            shards = RedisShards([parse_address(redis.address)], Timeouts(0.5, 2.0))
            broker, node = RedisBroker(shards, RedisKeys("b")), Node()
            broker.start("n1", node)
            # No wait: the link is still making its first connection (a restarted writer shard is
            # asked for its channels at once).
            await broker.subscribe("early")
            await broker.publish(Publication("early", b"in"))
            await eventually_async(lambda: node.publications == [b"in"], timeout=5, what="delivery")
            await broker.close()
            await shards.close()

        asyncio.run(asyncio.wait_for(scenario(), scaled(30)))
