"""What the engine conformance suites run against: one entry per engine implementation.

Each entry gives the three interfaces and a clock. The memory engine takes ``now`` from the caller, so its
clock is a number the test moves; an engine that keeps time itself (Redis) gets a clock that really
sleeps. Suites only move time with ``await clock.advance(seconds)``, never by passing numbers themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from broker.engine import Broker, HistoryEngine, MemoryBroker, MemoryHistory, MemoryPresence, PresenceManager
from broker.engine.redis import RedisHistory
from broker.engine.redis_address import parse_address
from broker.engine.redis_broker import RedisBroker
from broker.engine.redis_clients import RedisShards, Timeouts
from broker.engine.redis_keys import RedisKeys
from broker.engine.redis_presence import RedisPresence
from tests.support import redis_server as redis_support
from tests.support.redis_server import RedisServer

T = TypeVar("T")


class ManualClock:
    def __init__(self) -> None:
        self._now = 1_000_000.0

    def now(self) -> float:
        return self._now

    async def advance(self, seconds: float) -> None:
        self._now += seconds


class WallClock:
    def now(self) -> float:
        return time.time()

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class EngineUnderTest:
    name: str
    history: HistoryEngine
    presence: PresenceManager
    make_broker: Callable[[], Broker]  # a new node's broker, sharing whatever the nodes share
    clock: ManualClock | WallClock
    # Run inside the scenario's event loop: before (an empty database) and after (close connections).
    prepare: Callable[[], Awaitable[None]] | None = None
    close: Callable[[], Awaitable[None]] | None = None

    def run(self, scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        async def bounded() -> T:
            if self.prepare is not None:
                await self.prepare()
            try:
                return await asyncio.wait_for(scenario(), timeout)
            finally:
                if self.close is not None:
                    await self.close()

        return asyncio.run(bounded())


def _memory() -> EngineUnderTest:
    return EngineUnderTest("memory", MemoryHistory(), MemoryPresence(), MemoryBroker, ManualClock())


def _redis_history(port: int) -> EngineUnderTest:
    """History in a real redis-server; presence and broker are the memory ones (see :func:`_redis`)."""
    client = Redis(host="127.0.0.1", port=port)

    async def flush() -> None:
        await client.flushall()

    return EngineUnderTest(
        "redis",
        RedisHistory(client),
        MemoryPresence(),
        MemoryBroker,
        WallClock(),
        prepare=flush,
        close=client.aclose,
    )


def _redis(port: int) -> EngineUnderTest:
    """The whole Redis engine on a real redis-server; each broker made is a node of its own."""
    timeouts = Timeouts(1.0, 4.0)
    address = [parse_address(f"127.0.0.1:{port}")]
    shards = RedisShards(address, timeouts)
    keys = RedisKeys()
    opened: list[RedisShards] = [shards]

    def make_broker() -> Broker:
        node_shards = RedisShards(address, timeouts)
        opened.append(node_shards)
        return RedisBroker(node_shards, keys, control=True)

    async def flush() -> None:
        await shards.control.flushall()

    async def close() -> None:
        for each in opened:
            await each.close()

    return EngineUnderTest(
        "redis",
        RedisHistory(shards),
        RedisPresence(shards, keys),
        make_broker,
        WallClock(),
        prepare=flush,
        close=close,
    )


@pytest.fixture(params=["memory", "redis"])
def engine(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    """Every engine, whole: memory, and Redis on the session's redis-server."""
    if request.param == "memory":
        yield _memory()
    else:
        yield _redis(request.getfixturevalue("redis_server").port)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not redis_support.available():
        pytest.fail("redis-server is missing: make test installs it (make services)")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def flushed_redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied for this test."""
    assert redis_support.command(redis_server.port, "FLUSHALL") == b"+OK\r\n"
    return redis_server


@pytest.fixture(params=["memory", "redis"])
def history_engine(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    """Every history engine: the memory one, and Redis streams in a real redis-server."""
    if request.param == "memory":
        yield _memory()
    else:
        yield _redis_history(request.getfixturevalue("redis_server").port)
