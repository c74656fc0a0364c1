"""The Redis history engine where Redis matters: atomic offsets under concurrent writers, a Cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from broker.engine.redis import RedisHistory
from broker.publication import Publication
from tests.support.redis_server import RedisCluster, RedisServer

OPTIONS = {"history_size": 1000, "history_ttl": 60.0, "history_meta_ttl": 3600.0, "now": 0.0}


def test_offsets_stay_one_order_with_many_concurrent_writers(redis_server: RedisServer):
    async def scenario() -> list[int]:
        clients = [Redis(host="127.0.0.1", port=redis_server.port) for _ in range(4)]
        await clients[0].flushall()
        engines = [RedisHistory(client) for client in clients]
        try:
            results = await asyncio.gather(
                *(
                    engines[i % 4].publish(Publication("race", b"%d" % i), **OPTIONS)  # type: ignore[arg-type]
                    for i in range(400)
                )
            )
            assert len({r.epoch for r in results}) == 1
            stored = await engines[0].history(
                "race", limit=-1, since=None, reverse=False, now=0.0, history_meta_ttl=3600.0
            )
            assert [p.offset for p in stored.publications] == list(range(1, 401))
            return sorted(r.offset for r in results)
        finally:
            for client in clients:
                await client.aclose()

    assert asyncio.run(scenario()) == list(range(1, 401))


def test_a_channels_keys_share_one_cluster_slot_so_the_script_runs_on_a_cluster(tmp_path: Path):
    async def scenario(port: int) -> None:
        client = ClusterClient(host="127.0.0.1", port=port)
        engine = RedisHistory(client)
        try:
            for n in range(30):
                channel = f"room:{n}"
                for i in range(3):
                    publication = Publication(channel, b"%d" % i, user="u", client="c", conn_info=b"{}")
                    await engine.publish(publication, idempotency_key=f"k{i}", **OPTIONS)  # type: ignore[arg-type]
                found = await engine.history(
                    channel, limit=-1, since=None, reverse=False, now=0.0, history_meta_ttl=3600.0
                )
                assert [(p.offset, p.data, p.user) for p in found.publications] == [
                    (1, b"0", "u"),
                    (2, b"1", "u"),
                    (3, b"2", "u"),
                ]
            slots = {client.keyslot(engine.stream_key("room:1")), client.keyslot(engine.meta_key("room:1"))}
            slots.add(client.keyslot(engine.result_key("room:1", "k0")))
            assert len(slots) == 1
        finally:
            await client.aclose()

    with RedisCluster(tmp_path) as cluster:
        asyncio.run(asyncio.wait_for(scenario(cluster.nodes[0].port), 60))
