"""Which async HTTP client the proxies use: aiohttp against httpx, POSTing JSON to a local backend.

The backend is a bare asyncio HTTP/1.1 server in its own process that answers every request with a
connect proxy result over keep-alive, so the client side is what is measured. Each client makes
``--requests`` POSTs with ``--concurrency`` in flight over a keep-alive pool, in the same run; reported:
requests/s and the client process's CPU per request.

    .venv/bin/python -m bench.proxy_client_bench        # needs httpx installed beside aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import sys
import time
from typing import Any

import orjson

from bench import proxy_backend

BODY = orjson.dumps({"client": "c", "transport": "websocket", "protocol": "json", "encoding": "json"})


async def _aiohttp(url: str, count: int, concurrency: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as reply:
                orjson.loads(await reply.read())

        await _run(one, count, concurrency)


async def _httpx(url: str, count: int, concurrency: int) -> None:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def one() -> None:
            reply = await client.post(url, content=BODY, headers={"Content-Type": "application/json"})
            orjson.loads(reply.content)

        await _run(one, count, concurrency)


async def _run(one: Any, count: int, concurrency: int) -> None:
    left = [count]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def measure(name: str, client: Any, url: str, count: int, concurrency: int) -> tuple[float, float]:
    import uvloop

    uvloop.install()
    asyncio.run(client(url, 200, concurrency))  # warm-up
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    asyncio.run(client(url, count, concurrency))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    spent = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return count / elapsed, spent / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    opts = parser.parse_args(argv)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = proxy_backend.start(port)
    try:
        url = f"http://127.0.0.1:{port}/connect"
        print(f"{opts.requests} POSTs, {opts.concurrency} in flight, one client process")
        print("| client | requests/s | client CPU µs / request |")
        print("|---|---|---|")
        for name, client in (("aiohttp", _aiohttp), ("httpx", _httpx)):
            rate, cpu = measure(name, client, url, opts.requests, opts.concurrency)
            print(f"| {name} | {rate:,.0f} | {cpu:.0f} |")
    finally:
        backend.terminate()
        backend.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
