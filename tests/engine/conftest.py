"""What the engine conformance suites run against: one entry per engine implementation.

Each entry gives the three interfaces and a clock. The memory engine takes ``now`` from the caller, so its
clock is a number the test moves; an engine that keeps time itself (Redis) gets a clock that really
sleeps. Suites only move time with ``await clock.advance(seconds)``, never by passing numbers themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from broker.engine import Broker, HistoryEngine, MemoryBroker, MemoryHistory, MemoryPresence, PresenceManager

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

    def run(self, scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(scenario(), timeout)

        return asyncio.run(bounded())


def _memory() -> EngineUnderTest:
    return EngineUnderTest("memory", MemoryHistory(), MemoryPresence(), MemoryBroker, ManualClock())


IMPLEMENTATIONS = {"memory": _memory}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def engine(request: pytest.FixtureRequest) -> Iterator[EngineUnderTest]:
    yield IMPLEMENTATIONS[request.param]()
