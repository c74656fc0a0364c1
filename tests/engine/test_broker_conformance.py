"""The broker interface, as every implementation must behave: nodes exchange publications and control."""

from __future__ import annotations

import asyncio

from broker.publication import Publication
from tests.engine.conftest import EngineUnderTest


class Node:
    def __init__(self) -> None:
        self.publications: list[tuple[str, bytes]] = []
        self.control: list[bytes] = []

    def on_publication(self, publication: Publication) -> None:
        self.publications.append((publication.channel, publication.data))

    def on_control(self, data: bytes) -> None:
        self.control.append(data)


async def settle() -> None:
    """Let a networked broker deliver (the memory broker delivers before ``publish`` returns)."""
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_a_node_receives_the_channels_it_subscribed_in_publish_order(engine: EngineUnderTest):
    async def scenario() -> list[tuple[str, bytes]]:
        broker, node = engine.make_broker(), Node()
        broker.start("node-a", node)
        await broker.wait_connected(5)
        await broker.subscribe("news")
        for i in range(50):
            await broker.publish(Publication("news", b"%d" % i))
            await broker.publish(Publication("elsewhere", b"-"))
        await settle()
        await broker.close()
        return node.publications

    assert engine.run(scenario) == [("news", b"%d" % i) for i in range(50)]


def test_after_unsubscribe_nothing_of_the_channel_arrives(engine: EngineUnderTest):
    async def scenario() -> list[tuple[str, bytes]]:
        broker, node = engine.make_broker(), Node()
        broker.start("node-a", node)
        await broker.wait_connected(5)
        await broker.subscribe("news")
        await broker.publish(Publication("news", b"1"))
        await settle()
        await broker.unsubscribe("news")
        await broker.publish(Publication("news", b"2"))
        await settle()
        await broker.close()
        return node.publications

    assert engine.run(scenario) == [("news", b"1")]


def test_control_reaches_every_node_or_the_one_named(engine: EngineUnderTest):
    async def scenario() -> list[bytes]:
        broker, node = engine.make_broker(), Node()
        broker.start("node-a", node)
        await broker.wait_connected(5)
        await broker.publish_control(b"all")
        await broker.publish_control(b"mine", "node-a")
        await broker.publish_control(b"theirs", "node-b")
        await settle()
        await broker.close()
        return node.control

    assert engine.run(scenario) == [b"all", b"mine"]


def test_a_closed_broker_delivers_nothing_more(engine: EngineUnderTest):
    async def scenario() -> Node:
        broker, node = engine.make_broker(), Node()
        broker.start("node-a", node)
        await broker.wait_connected(5)
        await broker.subscribe("news")
        await broker.close()
        try:
            await broker.publish(Publication("news", b"late"))
        except Exception:
            pass  # an engine may refuse to publish once closed; delivering would be the fault
        await settle()
        return node

    assert engine.run(scenario).publications == []
