"""The Redis history engine where Redis matters: atomic offsets and one PUB/SUB order under concurrent
writers, what reaches PUB/SUB, a lost meta, lost scripts, a restart, a Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster as ClusterClient

from broker import errors
from broker.engine import StreamPosition
from broker.engine.redis import RedisHistory
from broker.engine.redis_codec import decode_message
from broker.publication import Publication
from tests.support.redis_server import RedisCluster, RedisServer
from tests.support.waiting import scaled

META_TTL = 3600.0
OPTIONS: dict[str, Any] = {
    "history_size": 1000,
    "history_ttl": 60.0,
    "history_meta_ttl": META_TTL,
    "now": 0.0,
}
NO_HISTORY: dict[str, Any] = {**OPTIONS, "history_size": 0}


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), scaled(timeout))

    asyncio.run(bounded())


async def subscribed(port: int, name: str, *, sharded: bool = False) -> PubSub:
    """A PUB/SUB connection subscribed to ``name`` (SSUBSCRIBE when ``sharded``; confirmed)."""
    pubsub = Redis(host="127.0.0.1", port=port).pubsub()
    await (pubsub.ssubscribe(name) if sharded else pubsub.subscribe(name))
    confirmation = await pubsub.get_message(timeout=scaled(5))
    assert confirmation is not None and confirmation["type"] in ("subscribe", "ssubscribe")
    return pubsub


async def received(pubsub: PubSub, count: int, quiet: float = 0.2) -> list[Publication]:
    """``count`` publications, then nothing more for ``quiet`` seconds."""
    out: list[Publication] = []
    while len(out) < count:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=scaled(5))
        assert message is not None, f"{len(out)} of {count} publications arrived"
        out.append(decode_message(message["data"]))
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet) is None
    return out


async def stored(engine: RedisHistory, channel: str) -> list[Publication]:
    found = await engine.history(
        channel, limit=-1, since=None, reverse=False, now=0.0, history_meta_ttl=META_TTL
    )
    return found.publications


def test_many_concurrent_writers_get_one_order_and_pubsub_delivers_it(flushed_redis: RedisServer):
    writers, tasks, each = 3, 4, 25
    total = writers * tasks * each

    async def scenario() -> None:
        clients = [Redis(host="127.0.0.1", port=flushed_redis.port) for _ in range(writers)]
        engines = [RedisHistory(client) for client in clients]
        pubsub = await subscribed(flushed_redis.port, engines[0].keys.publications("race"))
        try:

            async def write(engine: RedisHistory, task: int) -> list[int]:
                offsets = []
                for i in range(each):
                    result = await engine.publish(Publication("race", b"%d.%d" % (task, i)), **OPTIONS)
                    offsets.append(result.offset)
                return offsets

            results = await asyncio.gather(
                *(write(engines[w], w * tasks + t) for w in range(writers) for t in range(tasks))
            )
            assert sorted(o for offsets in results for o in offsets) == list(range(1, total + 1))
            assert all(offsets == sorted(offsets) for offsets in results)  # one writer's own order kept
            delivered = await received(pubsub, total)
            history = await stored(engines[0], "race")
            assert [p.offset for p in delivered] == list(range(1, total + 1))
            assert [(p.offset, p.epoch, p.data) for p in delivered] == [
                (p.offset, p.epoch, p.data) for p in history
            ]
            assert len({p.data for p in delivered}) == total
        finally:
            await pubsub.aclose()
            for client in clients:
                await client.aclose()

    run(scenario)


def test_what_reaches_pubsub_without_history_with_idempotency_and_when_told_not_to(
    flushed_redis: RedisServer,
):
    async def scenario() -> None:
        client = Redis(host="127.0.0.1", port=flushed_redis.port)
        engine = RedisHistory(client)
        quiet = RedisHistory(client, broadcast=False)
        pubsub = await subscribed(flushed_redis.port, engine.keys.publications("ch"))
        try:
            joined = Publication("ch", b"", user="u", client="c", kind="join")
            assert (await engine.publish(joined, **NO_HISTORY)).offset == 0
            await engine.publish(Publication("ch", b"plain"), **NO_HISTORY)
            await engine.publish(Publication("ch", b"once"), idempotency_key="k", **NO_HISTORY)
            duplicate = await engine.publish(Publication("ch", b"again"), idempotency_key="k", **NO_HISTORY)
            assert duplicate.duplicate
            await engine.publish(Publication("ch", b"kept"), **OPTIONS)
            await engine.publish(Publication("ch", b"skipped"), skip_history=True, **OPTIONS)
            await quiet.publish(Publication("ch", b"stored only"), **OPTIONS)
            await quiet.publish(Publication("ch", b"not sent"), **NO_HISTORY)
            await engine.publish(Publication("ch", b"last", user="u", client="c", tags={"t": "1"}), **OPTIONS)
            delivered = await received(pubsub, 6)
            assert [(p.data, p.offset, p.kind) for p in delivered] == [
                (b"", 0, "join"),
                (b"plain", 0, ""),
                (b"once", 0, ""),
                (b"kept", 1, ""),
                (b"skipped", 0, ""),
                (b"last", 3, ""),
            ]
            assert delivered[-1] == (await stored(engine, "ch"))[-1]
            assert delivered[-1].tags == {"t": "1"} and delivered[-1].user == "u"
            assert [p.data for p in await stored(engine, "ch")] == [b"kept", b"stored only", b"last"]
        finally:
            await pubsub.aclose()
            await client.aclose()

    run(scenario)


def test_a_deleted_meta_starts_a_new_epoch_and_old_positions_do_not_recover(flushed_redis: RedisServer):
    async def scenario() -> None:
        client = Redis(host="127.0.0.1", port=flushed_redis.port)
        engine = RedisHistory(client)
        try:
            for i in range(3):
                old = await engine.publish(Publication("ch", b"%d" % i), **OPTIONS)
            await client.delete(engine.keys.meta("ch"))  # evicted, or expired on a server with no TTL
            new = await engine.publish(Publication("ch", b"new"), **OPTIONS)
            assert new.offset == 1 and new.epoch != old.epoch
            assert [(p.offset, p.data) for p in await stored(engine, "ch")] == [(1, b"new")]
            since = StreamPosition(old.offset, old.epoch)
            recovery = await engine.recover("ch", since=since, limit=0, now=0.0, history_meta_ttl=META_TTL)
            assert recovery == ([], StreamPosition(1, new.epoch), False)
            with pytest.raises(errors.ClientError) as raised:
                await engine.history(
                    "ch", limit=-1, since=since, reverse=False, now=0.0, history_meta_ttl=META_TTL
                )
            assert raised.value.code == errors.UNRECOVERABLE_POSITION.code
        finally:
            await client.aclose()

    run(scenario)


def test_publications_made_while_recovering_do_not_spoil_the_recovery(flushed_redis: RedisServer):
    """A publication that lands between the position read and the stream read is past the reported
    position: the recovery is still complete (the subscriber gets that one live)."""

    async def scenario() -> None:
        client = Redis(host="127.0.0.1", port=flushed_redis.port)
        engine = RedisHistory(client)
        try:
            for i in range(5):
                top = await engine.publish(Publication("ch", b"%d" % i), **OPTIONS)
            read_position = engine.position

            async def position_then_a_publication(channel: str, **kwargs: Any) -> StreamPosition:
                position = await read_position(channel, **kwargs)
                await engine.publish(Publication("ch", b"late"), **OPTIONS)
                return position

            engine.position = position_then_a_publication  # type: ignore[method-assign]
            since = StreamPosition(2, top.epoch)
            recovery = await engine.recover("ch", since=since, limit=0, now=0.0, history_meta_ttl=META_TTL)
            assert recovery.recovered and recovery.position == StreamPosition(5, top.epoch)
            assert [p.offset for p in recovery.publications] == [3, 4, 5]
        finally:
            await client.aclose()

    run(scenario)


def test_scripts_lost_by_redis_are_loaded_again(flushed_redis: RedisServer):
    async def scenario() -> None:
        client = Redis(host="127.0.0.1", port=flushed_redis.port)
        engine = RedisHistory(client)
        try:
            assert (await engine.publish(Publication("ch", b"a"), **OPTIONS)).offset == 1
            await client.script_flush()  # what a restart or a failover to a replica does to the cache
            assert (await engine.publish(Publication("ch", b"b"), **OPTIONS)).offset == 2
            await client.script_flush()
            assert (await engine.position("ch", now=0.0, history_meta_ttl=META_TTL)).offset == 2
        finally:
            await client.aclose()

    run(scenario)


def test_after_a_redis_restart_the_same_engine_goes_on_in_a_new_epoch(tmp_path: Path):
    async def scenario(server: RedisServer) -> None:
        client = Redis(host="127.0.0.1", port=server.port)
        engine = RedisHistory(client)
        try:
            before = await engine.publish(Publication("ch", b"a"), **OPTIONS)
            await asyncio.to_thread(server.restart)  # nothing persisted: streams and scripts are gone
            after = await engine.publish(Publication("ch", b"b"), **OPTIONS)
            assert after.offset == 1 and after.epoch != before.epoch
        finally:
            await client.aclose()

    with RedisServer(tmp_path) as server:
        run(lambda: scenario(server))


def test_a_channels_keys_share_one_cluster_slot_so_the_script_runs_on_a_cluster(tmp_path: Path):
    async def scenario(ports: list[int]) -> None:
        client = ClusterClient(host="127.0.0.1", port=ports[0])
        engine = RedisHistory(client)
        # Sharded PUB/SUB: a channel's publications reach the master of its slot only.
        name = engine.keys.publications("room:7")
        await client.initialize()
        owner = int(client.get_node_from_key(name).port)
        pubsubs = [await subscribed(port, name, sharded=port == owner) for port in ports]
        try:
            # Odd names too: a key outside the script's slot would be refused (CROSSSLOT).
            for channel in [*(f"room:{n}" for n in range(30)), "}x", "a}b", "{x}", "a\\b"]:
                for i in range(3):
                    publication = Publication(channel, b"%d" % i, user="u", client="c", conn_info=b"{}")
                    await engine.publish(publication, idempotency_key=f"k{i}", **OPTIONS)
                found = await stored(engine, channel)
                assert [(p.offset, p.data, p.user) for p in found] == [
                    (1, b"0", "u"),
                    (2, b"1", "u"),
                    (3, b"2", "u"),
                ]
            await engine.publish(Publication("room:8", b"plain"), **NO_HISTORY)
            for port, pubsub in zip(ports, pubsubs, strict=True):
                expected = [(1, b"0"), (2, b"1"), (3, b"2")] if port == owner else []
                assert [(p.offset, p.data) for p in await received(pubsub, len(expected))] == expected
            keys = engine.keys
            names = [keys.stream("room:1"), keys.meta("room:1"), keys.result("room:1", "k0")]
            assert len({client.keyslot(name) for name in names}) == 1
            slots = {client.keyslot(keys.stream(f"room:{n}")) for n in range(30)}
            owners = {client.get_node_from_key(keys.stream(f"room:{n}")).port for n in range(30)}
            assert len(slots) == 30 and owners == set(ports)  # the channels really were spread
        finally:
            for pubsub in pubsubs:
                await pubsub.aclose()
            await client.aclose()

    with RedisCluster(tmp_path) as cluster:
        run(lambda: scenario([node.port for node in cluster.nodes]))
