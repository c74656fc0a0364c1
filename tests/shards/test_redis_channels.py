"""A writer shard's channels on Redis, against a broker that confirms when the test says so."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.engine.broker import Broker, BrokerEvents
from broker.publication import Publication
from shards import redis_channels
from shards.redis_channels import RedisChannels


class SlowBroker(Broker):
    def __init__(self) -> None:
        self.confirm = asyncio.Event()
        self.calls: list[tuple[str, str]] = []
        self.fail = False

    def start(self, node_id: str, events: BrokerEvents) -> None:
        del node_id, events

    async def publish(self, publication: Publication) -> None:
        del publication

    async def subscribe(self, channel: str) -> None:
        self.calls.append(("subscribe", channel))
        if self.fail:
            raise TimeoutError
        await self.confirm.wait()

    async def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))

    async def publish_control(self, data: bytes, node_id: str = "") -> None:
        del data, node_id

    async def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.published: list[str] = []
        self.checked: list[str] = []

    def publish(self, publication: Publication) -> bool:
        self.published.append(publication.channel)
        return True

    def check(self, channel: str) -> None:
        self.checked.append(channel)


def setup() -> tuple[RedisChannels, SlowBroker, Sink, set[asyncio.Task[Any]]]:
    loop = asyncio.get_running_loop()
    broker, sink, tasks = SlowBroker(), Sink(), set()

    def spawn(coroutine: Any) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)

    channels = RedisChannels(broker, loop, spawn)
    channels.sink = sink
    return channels, broker, sink, tasks


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_shards_are_welcomed_once_redis_confirmed_and_only_one_subscription_is_made():
    async def scenario() -> None:
        channels, broker, _, _ = setup()
        welcomed: list[int] = []
        channels.wanted("news", lambda: welcomed.append(1))
        channels.wanted("news", lambda: welcomed.append(2))  # another shard, while Redis has not answered
        await asyncio.sleep(0.01)
        assert welcomed == [] and broker.calls == [("subscribe", "news")]
        broker.confirm.set()
        await asyncio.sleep(0.01)
        assert welcomed == [1, 2]
        channels.wanted("news", lambda: welcomed.append(3))  # subscribed already: at once
        assert welcomed == [1, 2, 3] and broker.calls == [("subscribe", "news")]

    run(scenario)


def test_redis_is_left_a_grace_after_the_last_shard_and_a_quick_return_keeps_it(monkeypatch: Any):
    monkeypatch.setattr(redis_channels, "RELEASE_GRACE", 0.05)

    async def scenario() -> None:
        channels, broker, _, _ = setup()
        broker.confirm.set()
        channels.wanted("news", lambda: None)
        await asyncio.sleep(0.01)
        channels.released("news")
        channels.wanted("news", lambda: None)  # back within the grace: nothing changes in Redis
        await asyncio.sleep(0.1)
        assert broker.calls == [("subscribe", "news")]
        channels.released("news")
        await asyncio.sleep(0.1)
        assert broker.calls == [("subscribe", "news"), ("unsubscribe", "news")]
        assert channels.subscribed == set()
        channels.close()

    run(scenario)


def test_a_subscription_redis_did_not_confirm_still_welcomes_and_a_reconnect_asks_for_checks():
    async def scenario() -> None:
        channels, broker, sink, _ = setup()
        broker.fail = True
        welcomed: list[int] = []
        channels.wanted("late", lambda: welcomed.append(1))
        await asyncio.sleep(0.01)
        assert welcomed == [1] and channels.subscribed == {"late"}
        channels.on_publication(Publication("late", b"x"))
        assert sink.published == ["late"]
        channels.on_resubscribed(1)
        assert sink.checked == ["late"]

    run(scenario)
