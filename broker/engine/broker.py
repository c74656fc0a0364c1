"""The broker interface: how the nodes of one Switchboard exchange publications and control messages.

Inside a node, shards exchange publications over ZeroMQ (``broker.ipc.pubsub``): the writer shard of a
channel sends each publication once to every shard. The broker is the level above: node ↔ node. A node
subscribes a channel while it has local subscribers, and every publication of that channel made on any
node reaches it in the one order in which they were published (its ``on_publication`` handler), its own
included. Control messages (disconnect a user, node info …) go to every node or to one by its id.

With a single node (the memory engine) there is nobody else to talk to: the memory broker hands
publications and control messages straight back to this node's handlers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from broker.publication import Publication


class BrokerEvents(Protocol):
    """What a node does with what reaches it through the broker."""

    def on_publication(self, publication: Publication) -> None: ...

    def on_control(self, data: bytes) -> None: ...

    def on_resubscribed(self, count: int) -> None:
        """The link to the other nodes came back after an outage: ``count`` channels subscribed again
        (publications sent meanwhile were lost for this node)."""


class Broker(ABC):
    @abstractmethod
    def start(self, node_id: str, events: BrokerEvents) -> None:
        """Start delivering to ``events``; ``node_id`` is this node's id for unicast control."""

    async def wait_connected(self, timeout: float) -> None:
        """Until the broker delivers what is published from now on (or ``TimeoutError``)."""
        del timeout

    @abstractmethod
    async def publish(self, publication: Publication) -> None:
        """Send to every node subscribed to ``publication.channel`` (this one included)."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """From now on this node receives the channel's publications."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications."""

    @abstractmethod
    async def publish_control(self, data: bytes, node_id: str = "") -> None:
        """Send a control message to every node (``node_id`` empty) or to one node."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections; later calls may fail."""
