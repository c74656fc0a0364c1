"""Publishes with history through the Redis history engine: throughput and Redis CPU per publish.

Starts its own redis-server on a free loopback port (no persistence), publishes ``--publishes`` times
with ``--concurrency`` publishes in flight on one client, over ``--channels`` channels, and reads Redis's
own CPU from ``INFO cpu`` before and after. The memory engine's publish is timed in the same run.

    .venv/bin/python -m bench.redis_history_bench --publishes 50000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from broker.engine import MemoryHistory
from broker.engine.redis import RedisHistory
from broker.publication import Publication
from tests.support.redis_server import RedisServer

OPTIONS = {"history_size": 100, "history_ttl": 300.0, "history_meta_ttl": 3600.0, "now": 0.0}


async def redis_cpu(client: Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def run(port: int, publishes: int, concurrency: int, channels: int) -> dict[str, float]:
    client = Redis(host="127.0.0.1", port=port)
    engine = RedisHistory(client)
    data = b'{"text":"' + b"x" * 80 + b'"}'
    queue = iter(range(publishes))

    async def worker() -> None:
        for i in queue:
            await engine.publish(Publication(f"bench:{i % channels}", data), **OPTIONS)  # type: ignore[arg-type]

    try:
        await client.flushall()
        cpu_before = await redis_cpu(client)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = await redis_cpu(client) - cpu_before
        top = await engine.position("bench:0", now=0.0, history_meta_ttl=3600.0)
        assert top.offset == len(range(0, publishes, channels)), top
    finally:
        await client.aclose()
    memory = MemoryHistory()
    started = time.perf_counter()
    for i in range(publishes):
        await memory.publish(Publication(f"bench:{i % channels}", data), **OPTIONS)  # type: ignore[arg-type]
    memory_elapsed = time.perf_counter() - started
    return {
        "publishes/s": publishes / elapsed,
        "redis CPU µs/publish": cpu / publishes * 1e6,
        "client wall µs/publish": elapsed / publishes * 1e6,
        "memory engine publishes/s": publishes / memory_elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publishes", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        results = asyncio.run(run(server.port, args.publishes, args.concurrency, args.channels))
    print("| metric | value |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:,.1f} |")
    print("- check ok: every channel's top offset equals the publishes made to it")


if __name__ == "__main__":
    main()
