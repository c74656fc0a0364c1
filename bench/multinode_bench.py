"""One node on the memory engine against three nodes on one redis-server, in one run on the same cores.

Both setups get the same subscribers (uni_http_stream sockets subscribed to one history channel through
their token; spread evenly over the nodes of the Redis setup) and the same publications through the
server API (rotating over the nodes of the Redis setup). Reported per setup:

* **fan-out deliveries/s** for bursts of 1 and of 10 publications: deliveries over the time from the
  first publish of the measured bursts to the last delivery; **p50 / p99 latency** of a burst, from its
  first publish to its last delivery;
* **publish API throughput**: eight keep-alive clients (spread over the nodes) publishing to a history
  channel without subscribers for three seconds;
* **connections by user**: p50 / p99 of ``connections {user}`` asked on the first node for a user
  connected on the last one, beside ``/health`` on the same node; a CEL scan (``true``) over every node;
* **Redis per publication** (during the publish throughput phase): round trips and microseconds of
  Redis CPU (``INFO commandstats``), and every command Redis counted, inside scripts and heartbeats too.

    .venv/bin/python -m bench.multinode_bench                # 10,000 subscribers
    .venv/bin/python -m bench.multinode_bench --subscribers 300 --bursts 20
"""

from __future__ import annotations

import argparse
import os
import platform
import selectors
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from tests.integration.streamclient import StreamClient
from tests.support.redis_server import RedisServer, command
from tests.support.server import Server
from tests.support.tokens import API_KEY, make_token

CHANNEL = "bench:fan"
NAMESPACES = [{"name": "bench", "history_size": 100, "history_ttl": "60s"}]


class Receivers:
    """Every subscriber socket, read by one thread that counts publications and notes the last arrival."""

    def __init__(self, clients: list[StreamClient]) -> None:
        self.clients = clients
        self.count = 0
        self.last = 0.0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for client in clients:
            client.sock.setblocking(False)
            self._selector.register(client.sock, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.1):
                try:
                    data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                found = data.count(b'"pub"')
                if found:
                    self.count += found
                    self.last = time.monotonic()

    def wait_for(self, total: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < total and time.monotonic() < deadline:
            time.sleep(0.001)
        return self.count >= total

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for client in self.clients:
            client.sock.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publish_throughput(nodes: list[Server], redis_port: int | None, seconds: float = 3.0) -> dict[str, Any]:
    """Publishes/s through the API to a history channel nobody subscribes, from 8 keep-alive clients
    spread over the nodes; with Redis, its commands and CPU per publication over the same time."""
    done = [0] * 8
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        session, node = requests.Session(), nodes[k % len(nodes)]
        while time.monotonic() < stop:
            session.post(
                f"{node.url}/api/publish",
                json={"channel": "bench:solo", "data": {"k": k}},
                headers={"X-API-Key": API_KEY},
            ).raise_for_status()
            done[k] += 1

    if redis_port is not None:
        command(redis_port, "CONFIG", "RESETSTAT")
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    total = sum(done)
    out: dict[str, Any] = {"publish API /s (history, 8 clients)": total / (time.monotonic() - started)}
    if redis_port is not None:
        calls = usec = script_calls = script_usec = 0
        for line in command(redis_port, "INFO", "commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(part.split("=") for part in rest.split(","))
                calls += int(fields["calls"])
                usec += int(fields["usec"])
                if name == "cmdstat_evalsha":
                    script_calls += int(fields["calls"])
                    script_usec += int(fields["usec"])
        # EVALSHA's time includes the commands the script runs; Redis also counts each of those.
        out["redis round trips / publication (EVALSHA)"] = script_calls / total
        out["redis CPU µs / publication (EVALSHA, script included)"] = script_usec / total
        out["redis commands / publication (every one, in scripts too, heartbeats too)"] = calls / total
    return out


def measure(nodes: list[Server], subscribers: int, bursts: int, redis_port: int | None) -> dict[str, Any]:
    clients = []
    for i in range(subscribers):
        node = nodes[i % len(nodes)]
        client = StreamClient(node.port, {"token": make_token(f"sub-{i}", channels=[CHANNEL])}, timeout=30)
        client.connect()
        clients.append(client)
    receivers = Receivers(clients)
    sessions = [requests.Session() for _ in nodes]
    headers = {"X-API-Key": API_KEY}
    out: dict[str, Any] = {}

    def publish(n: int) -> None:
        index = n % len(nodes)
        sessions[index].post(
            f"{nodes[index].url}/api/publish", json={"channel": CHANNEL, "data": {"n": n}}, headers=headers
        ).raise_for_status()

    sent = 0
    for per_burst in (1, 10):
        spans = []
        started_all = time.monotonic()
        delivered_before = receivers.count
        for _ in range(bursts):
            expected = receivers.count + per_burst * subscribers
            started = time.monotonic()
            for _ in range(per_burst):
                publish(sent)
                sent += 1
            if not receivers.wait_for(expected, 20):
                raise RuntimeError(f"lost deliveries: {expected - receivers.count}")
            spans.append(receivers.last - started)
        total = receivers.count - delivered_before
        out[f"deliveries/s ({per_burst} per burst)"] = total / (receivers.last - started_all)
        out[f"burst p50 ms ({per_burst})"] = statistics.median(spans) * 1000
        out[f"burst p99 ms ({per_burst})"] = percentile(spans, 0.99) * 1000
    out.update(publish_throughput(nodes, redis_port))

    probe = StreamClient(nodes[-1].port, {"token": make_token("probe")})
    probe.connect()
    ask = sessions[0]
    by_user, health = [], []
    for _ in range(200):
        t = time.monotonic()
        answer = ask.post(f"{nodes[0].url}/api/connections", json={"user": "probe"}, headers=headers).json()
        by_user.append(time.monotonic() - t)
        assert len(answer["result"]["connections"]) == 1, answer
        t = time.monotonic()
        ask.get(f"{nodes[0].url}/health").raise_for_status()
        health.append(time.monotonic() - t)
    out["connections by user p50 ms"] = statistics.median(by_user) * 1000
    out["connections by user p99 ms"] = percentile(by_user, 0.99) * 1000
    out["/health p50 ms"] = statistics.median(health) * 1000
    scans = []
    for _ in range(10):
        t = time.monotonic()
        answer = ask.post(
            f"{nodes[0].url}/api/connections", json={"expression": "true"}, headers=headers
        ).json()
        scans.append(time.monotonic() - t)
        assert len(answer["result"]["connections"]) == subscribers + 1
    out[f"CEL scan of {subscribers + 1} connections p50 ms"] = statistics.median(scans) * 1000
    probe.close()
    receivers.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--shards", type=int, default=2)
    opts = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="multinode-bench-"))
    results: dict[str, dict[str, Any]] = {}
    common = {"namespaces": NAMESPACES, "log_level": "warn", "client_queue_max_size": 10_000_000}
    with Server(work, shards=opts.shards, **common) as single:
        results["1 node, memory"] = measure([single], opts.subscribers, opts.bursts, None)
    with RedisServer(work / "redis") as redis:
        config = {**common, "engine": "redis", "redis_address": redis.address}
        nodes = [Server(work, shards=opts.shards, name=f"bench-{i}", **config).start() for i in range(3)]
        try:
            time.sleep(4)  # every node's info reached the others
            results["3 nodes, Redis"] = measure(nodes, opts.subscribers, opts.bursts, redis.port)
        finally:
            for node in nodes:
                node.stop()
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    names = list(results)
    print(
        f"\n{os.cpu_count()} cores, Python {platform.python_version()}, {opts.subscribers} subscribers, "
        f"{opts.bursts} bursts, {opts.shards} shards per node"
    )
    print(f"| measure | {' | '.join(names)} | ratio |")
    print("|---|" + "---|" * (len(names) + 1))
    for key in keys:
        values = [results[name].get(key) for name in names]
        cells = [f"{v:,.2f}" if isinstance(v, float) else "-" if v is None else str(v) for v in values]
        ratio = f"{values[1] / values[0]:.2f}x" if None not in values and values[0] else ""
        print(f"| {key} | {' | '.join(cells)} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
