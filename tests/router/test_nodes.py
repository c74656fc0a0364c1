"""The router's view of the other nodes, over an in-process control bus (no Redis needed here)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker import errors
from broker.engine.broker import Broker, BrokerEvents
from broker.ipc.control import RemoteError
from broker.publication import Publication
from router.nodes import Nodes, NodeUnavailable


class Bus:
    """Control messages between the nodes of one test: to everyone, or to one by id."""

    def __init__(self) -> None:
        self.nodes: dict[str, BrokerEvents] = {}
        self.deaf: set[str] = set()

    def deliver(self, data: bytes, node_id: str) -> None:
        for uid, events in list(self.nodes.items()):
            if uid not in self.deaf and node_id in ("", uid):
                asyncio.get_running_loop().call_soon(events.on_control, data)


class BusBroker(Broker):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def start(self, node_id: str, events: BrokerEvents) -> None:
        self.bus.nodes[node_id] = events

    async def publish(self, publication: Publication) -> None:
        del publication

    async def subscribe(self, channel: str) -> None:
        del channel

    async def unsubscribe(self, channel: str) -> None:
        del channel

    async def publish_control(self, data: bytes, node_id: str = "") -> None:
        self.bus.deliver(data, node_id)

    async def close(self) -> None:
        pass


def make_node(
    bus: Bus, uid: str, calls: list[tuple[str, str, dict[str, Any]]], interval: float = 0.05
) -> Nodes:
    async def local(method: str, params: dict[str, Any]) -> Any:
        calls.append((uid, method, params))
        if method == "fails":
            raise errors.NOT_AVAILABLE()
        if method == "slow":
            await asyncio.sleep(10)
        return {"here": uid, "method": method}

    async def info() -> dict[str, Any]:
        return {"uid": uid, "name": f"name-{uid}"}

    return Nodes(uid, f"name-{uid}", BusBroker(bus), local, info, interval)


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_nodes_learn_of_each_other_ask_and_are_told():
    async def scenario() -> None:
        bus, calls = Bus(), []
        a, b = make_node(bus, "a", calls), make_node(bus, "b", calls)
        await a.start(1)
        await b.start(1)
        await asyncio.sleep(0.15)
        assert [n.uid for n in a.live()] == ["b"] and a.live()[0].info["name"] == "name-b"
        assert await a.ask("b", "connections", {"user": "u"}, 1) == {"here": "b", "method": "connections"}
        with pytest.raises(RemoteError) as failed:
            await a.ask("b", "fails", {}, 1)
        assert failed.value.code == errors.NOT_AVAILABLE.code
        await a.tell_others("disconnect", {"user": "u"})
        await asyncio.sleep(0.05)
        assert ("b", "disconnect", {"user": "u"}) in calls and ("a", "disconnect", {"user": "u"}) not in calls
        await a.close()
        await b.close()

    run(scenario)


def test_a_silent_node_is_reported_unavailable_within_the_deadline_then_dropped():
    async def scenario() -> None:
        bus, calls = Bus(), []
        a, b = make_node(bus, "a", calls), make_node(bus, "b", calls)
        await a.start(1)
        await b.start(1)
        await asyncio.sleep(0.12)
        bus.deaf.add("b")  # b hears nothing more (and so says nothing more)
        await b.close()
        loop = asyncio.get_running_loop()
        started = loop.time()
        asked = await a.ask_each(["b"], "connections", {}, 0.3)
        assert asked.missing == ["b"] and asked.unavailable() == [{"uid": "b", "name": "name-b"}]
        assert loop.time() - started < 1
        await asyncio.sleep(0.2)  # three intervals of silence
        assert a.live() == []
        with pytest.raises(NodeUnavailable):
            await a.ask("b", "connections", {}, 0.1)
        await a.close()

    run(scenario)


def test_slow_answers_time_out_and_garbage_on_the_bus_is_dropped(caplog: pytest.LogCaptureFixture):
    async def scenario() -> None:
        bus, calls = Bus(), []
        a, b = make_node(bus, "a", calls), make_node(bus, "b", calls)
        await a.start(1)
        await b.start(1)
        for junk in (b"", b"not json", b"[]", b'{"no": "type"}', b'{"t": "rep", "id": "nobody"}'):
            bus.deliver(junk, "")
        asked = await a.ask_each(["b"], "slow", {}, 0.2)
        assert asked.missing == ["b"] and not asked.results
        assert a._waiting == {}  # nothing left behind by the request that timed out
        await a.close()
        await b.close()

    run(scenario)
    # Four junk messages, each heard by both nodes: one line each.
    assert sum("malformed control message" in r.message for r in caplog.records) == 8
