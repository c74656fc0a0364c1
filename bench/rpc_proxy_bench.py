"""RPC round trips through the RPC proxy, beside a command the server answers alone, in one run.

Starts a server (2 shards) whose RPC proxy is a bare uvloop backend in its own process
(:mod:`bench.proxy_backend`), then N WebSocket clients (one asyncio process, token-authenticated) each
send commands one after another for a few seconds: first ``rpc`` (router → nothing; shard → backend →
shard), then ``presence_stats`` of a channel (answered by the shards alone). Reported: round trips/s and
p50 / p99 latency of each; the ratio is what the backend's hop costs on these two cores.

    .venv/bin/python -m bench.rpc_proxy_bench
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import proxy_backend
from tests.integration.wsclient import WsClient
from tests.support.server import Server, free_port
from tests.support.tokens import make_token


async def _loop(
    port: int, clients: int, seconds: float, command: str, body: dict[str, object]
) -> list[float]:
    conns = [await WsClient.connected(port, make_token(f"rpc-{i}")) for i in range(clients)]
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one(client: WsClient) -> None:
        while time.monotonic() < stop:
            started = time.monotonic()
            reply = await client.command(command, body)
            if "error" in reply:
                raise RuntimeError(f"{command} failed: {reply}")
            latencies.append(time.monotonic() - started)

    await asyncio.gather(*(one(c) for c in conns))
    for client in conns:
        await client.close()
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args(argv)
    port = free_port()
    backend = proxy_backend.start(port)
    try:
        config = {
            "proxy_rpc_endpoint": f"http://127.0.0.1:{port}/rpc",
            "presence": True,
            "allow_presence_for_client": True,
            "log_level": "warn",
        }
        with Server(Path(tempfile.mkdtemp(prefix="rpc-bench-")), shards=2, **config) as server:
            print(f"{opts.clients} WebSocket clients, {opts.seconds:g} s each, 2 shards")
            print("| command | round trips/s | p50 ms | p99 ms |")
            print("|---|---|---|---|")
            for command, body in (
                ("rpc", {"method": "m", "data": {"x": 1}}),
                ("presence_stats", {"channel": "c"}),
            ):
                latencies = asyncio.run(_loop(server.port, opts.clients, opts.seconds, command, body))
                ordered = sorted(latencies)
                p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
                rate = len(latencies) / opts.seconds
                p50 = statistics.median(latencies)
                print(f"| {command} | {rate:,.0f} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} |")
    finally:
        backend.terminate()
        backend.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
