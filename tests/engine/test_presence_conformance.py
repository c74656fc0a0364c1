"""The presence interface, as every implementation must behave."""

from __future__ import annotations

from broker.engine import ClientInfo, PresenceStats
from tests.engine.conftest import EngineUnderTest


def test_entries_are_listed_by_client_and_counted_by_user(engine: EngineUnderTest):
    async def scenario() -> None:
        p, now = engine.presence, engine.clock.now
        await p.add_presence("room", ClientInfo("u1", "a", b'{"n":1}'), ttl=60, now=now())
        await p.add_presence("room", ClientInfo("u1", "b"), ttl=60, now=now())
        await p.add_presence("room", ClientInfo("", "c"), ttl=60, now=now())
        await p.add_presence("other", ClientInfo("u9", "z"), ttl=60, now=now())
        found = await p.presence("room", now=now())
        assert set(found) == {"a", "b", "c"} and found["a"] == ClientInfo("u1", "a", b'{"n":1}')
        assert await p.presence_stats("room", now=now()) == PresenceStats(3, 2)
        assert await p.presence("empty", now=now()) == {}

    engine.run(scenario)


def test_removed_entries_go_and_removing_twice_is_harmless(engine: EngineUnderTest):
    async def scenario() -> None:
        p, now = engine.presence, engine.clock.now
        await p.add_presence("room", ClientInfo("u1", "a"), ttl=60, now=now())
        await p.remove_presence("room", "a", now=now())
        await p.remove_presence("room", "a", now=now())
        assert await p.presence("room", now=now()) == {}
        assert await p.presence_stats("room", now=now()) == PresenceStats(0, 0)

    engine.run(scenario)


def test_entries_not_refreshed_within_ttl_expire_and_refreshed_ones_stay(engine: EngineUnderTest):
    async def scenario() -> None:
        p, now = engine.presence, engine.clock.now
        await p.add_presence("room", ClientInfo("u1", "gone"), ttl=1, now=now())
        await p.add_presence("room", ClientInfo("u2", "kept"), ttl=1, now=now())
        await engine.clock.advance(0.6)
        await p.add_presence("room", ClientInfo("u2", "kept"), ttl=1, now=now())
        await engine.clock.advance(0.6)
        assert set(await p.presence("room", now=now())) == {"kept"}
        assert await p.presence_stats("room", now=now()) == PresenceStats(1, 1)
        p.maintain(now())
        assert set(await p.presence("room", now=now())) == {"kept"}

    engine.run(scenario)
