"""PUB/SUB data plane: topic isolation, ordering, subscribe/unsubscribe with grace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq

from broker.ipc.pubsub import Publisher, Subscriber
from broker.publication import Publication
from tests.support.waiting import eventually_async


def test_publication_frames_round_trip() -> None:
    pub = Publication(
        "chat:1",
        b'{"a":1}',
        offset=5,
        epoch="ep",
        tags={"k": "v"},
        user="42",
        client="c1",
        conn_info=b'{"n":1}',
        chan_info=b"",
        time_ms=7,
    )
    again = Publication.from_frames(pub.to_frames())
    assert again == pub
    assert again.client_info() == {"user": "42", "client": "c1", "conn_info": b'{"n":1}'}
    anonymous_api = Publication("x", b"1")
    assert Publication.from_frames(anonymous_api.to_frames()).client_info() is None


def probing(
    publisher: Publisher, probe: Publication, got: list[Publication]
) -> Callable[[], list[Publication]]:
    """A check for ``eventually``: publishes ``probe`` once more, then what arrived so far."""

    def check() -> list[Publication]:
        publisher.publish(probe)
        return got

    return check


async def _flow(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoints = [f"ipc://{tmp_path}/pub-{i}.ipc" for i in range(2)]
    publishers = [Publisher(loop, ctx, e, lambda channel, i=i: i == 0) for i, e in enumerate(endpoints)]
    got: list[Publication] = []
    sub = Subscriber(loop, ctx, endpoints, got.append, grace=0.2)
    sub.subscribe("chat:1")
    # Subscriptions propagate asynchronously: publish until the first one arrives.
    await eventually_async(probing(publishers[0], Publication("chat:1", b"probe"), got), interval=0.01)
    for i in range(1000):
        publishers[1].publish(Publication("chat:1", b"%d" % i))
        publishers[1].publish(Publication("chat:10", b"other"))  # a prefix of no subscribed topic

    def numbers() -> list[bytes]:
        return [p.data for p in got if p.data != b"probe"]  # probes may still be on their way

    await eventually_async(numbers, until=lambda seen: len(seen) >= 1000)
    assert numbers() == [b"%d" % i for i in range(1000)]
    sub.release("chat:1")
    sub.subscribe("chat:1")  # coming back within the grace period keeps the subscription
    await asyncio.sleep(0.3)  # the point: longer than the grace period, and it is kept
    assert "chat:1" in sub.channels
    sub.release("chat:1")
    await eventually_async(lambda: "chat:1" not in sub.channels, what="the grace period to end")
    got.clear()
    publishers[0].publish(Publication("chat:1", b"late"))
    await asyncio.sleep(0.1)  # the point: nothing arrives meanwhile
    assert got == []
    sub.close()
    for p in publishers:
        p.close()
    ctx.term()


def test_topics_order_and_grace(tmp_path) -> None:
    asyncio.run(_flow(tmp_path))


async def _many_subscriptions(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/pub-0.ipc"
    publisher = Publisher(loop, ctx, endpoint, lambda channel: True)
    got: list[Publication] = []
    sub = Subscriber(loop, ctx, [endpoint], got.append)
    for i in range(3000):
        sub.subscribe(f"ch-{i}")
    # The 3000th subscription was not dropped: a publication in it arrives once the subscriptions did.
    await eventually_async(probing(publisher, Publication("ch-2999", b"last"), got), interval=0.01)
    assert got[0].channel == "ch-2999"
    sub.close()
    publisher.close()
    ctx.term()


def test_thousands_of_subscriptions_are_not_dropped(tmp_path) -> None:
    asyncio.run(_many_subscriptions(tmp_path))


async def _welcome(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoints = [f"ipc://{tmp_path}/w-{i}.ipc" for i in range(2)]
    # Shard 1 writes every channel; shard 0 writes none.
    publishers = [Publisher(loop, ctx, e, lambda channel, i=i: i == 1) for i, e in enumerate(endpoints)]
    got: list[Publication] = []
    sub = Subscriber(loop, ctx, endpoints, got.append)
    ready: list[float] = []
    sub.subscribe("news")
    sub.when_ready("news", lambda: ready.append(loop.time()))
    await eventually_async(lambda: ready, what="the writer to welcome the subscription")
    # Once ready, a publication sent right away is delivered (no lost first message).
    publishers[1].publish(Publication("news", b"first"))
    await eventually_async(lambda: got, what="the first publication")
    assert [p.data for p in got] == [b"first"]
    calls: list[int] = []
    sub.when_ready("news", lambda: calls.append(1))
    assert calls == [1]  # already ready: immediate
    sub.close()
    for p in publishers:
        p.close()
    ctx.term()


def test_subscriptions_are_welcomed_by_the_writer(tmp_path) -> None:
    asyncio.run(_welcome(tmp_path))


async def _rearm(tmp_path) -> None:
    loop = asyncio.get_running_loop()
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/r-0.ipc"
    writer = Publisher(loop, ctx, endpoint, lambda channel: True)
    got: list[Publication] = []
    sub = Subscriber(loop, ctx, [endpoint], got.append)
    ready: list[int] = []
    sub.subscribe("news")
    sub.when_ready("news", lambda: ready.append(1))
    await eventually_async(lambda: ready, what="the writer to welcome the subscription")
    # The writer restarts: a new socket on the same endpoint, which has none of the old subscriptions.
    writer.close()
    writer = Publisher(loop, ctx, endpoint, lambda channel: True)
    sub.rearm({"news", "not-subscribed"})
    again: list[int] = []
    sub.when_ready("news", lambda: again.append(1))
    assert again == []  # not ready until the new writer welcomed the subscription
    await eventually_async(lambda: again, what="the restarted writer to welcome it again")
    assert "not-subscribed" not in sub.channels
    writer.publish(Publication("news", b"first after the restart"))
    await eventually_async(lambda: got, what="the first publication after the restart")
    assert [p.data for p in got] == [b"first after the restart"]
    sub.close()
    writer.close()
    ctx.term()


def test_rearm_waits_for_the_restarted_writer(tmp_path) -> None:
    asyncio.run(_rearm(tmp_path))
