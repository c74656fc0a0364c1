"""Fan-out to http_stream clients against WebSocket clients of the same server, in one run.

One server (2 shards, ``http_stream: true``); N WebSocket and N http_stream clients in this process,
each with a token whose ``channels`` claim subscribes it server-side to its transport's channel
(``bench-ws`` / ``bench-hs``), so a connection is one request and nothing else. Then rounds, the two
transports taking turns: K publications to the transport's channel in one ``/api`` request
(newline-delimited commands), timed until every client has counted all K pushes (the client counts
``"pub":`` in the raw bytes, the same cheap work for both framings). Reported per transport:
deliveries/s (N*K over the burst's span, median over the rounds), the shards' CPU per delivery
(``/proc``), and http_stream / WebSocket.

Bursts must be long against the kernel's CPU accounting (10 ms ticks): with 20 publications per burst
(about 40,000 deliveries, under 0.1 s) the ratio swung from 0.66 to 2.76 between runs; with 100 (about
0.2-0.3 s per burst) it holds within a few percent.

    .venv/bin/python -m bench.emulation_fanout_bench [--clients 2000 --pubs 100 --rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.connections_bench import API_KEY, SECRET, CpuMeter, ServerProcess, git_commit, machine
from broker.auth import encode_token

MARK = b'"pub":'


class Counter(asyncio.Protocol):
    """Counts pushes in whatever arrives; a mark split over two reads is caught by the carried tail."""

    def __init__(self, first_request: bytes) -> None:
        self.first_request = first_request
        self.count = 0
        self.tail = b""
        self.connected = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.first_request)

    def data_received(self, data: bytes) -> None:
        chunk = self.tail + data
        if not self.connected.done() and b'"connect":' in chunk:
            self.connected.set_result(True)
        self.count += chunk.count(MARK)
        self.tail = data[-(len(MARK) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before the connect reply"))


def token(user: str, channel: str) -> str:
    return encode_token({"sub": user, "channels": [channel], "exp": int(time.time()) + 3600}, SECRET)


def websocket_request(port: int, user: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    payload = orjson.dumps({"id": 1, "connect": {"token": token(user, "bench-ws")}})
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 65536
    length = (
        bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        if len(payload) > 125
        else bytes([0x80 | len(payload)])
    )
    return head + b"\x81" + length + mask + masked


def http_stream_request(port: int, user: str) -> bytes:
    body = orjson.dumps({"id": 1, "connect": {"token": token(user, "bench-hs")}}) + b"\n"
    return (
        f"POST /connection/http_stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def open_clients(port: int, count: int, make: object, label: str) -> list[Counter]:
    loop = asyncio.get_running_loop()
    clients: list[Counter] = []
    for start in range(0, count, 200):
        batch = [Counter(make(port, f"{label}-{i}")) for i in range(start, min(count, start + 200))]  # type: ignore[operator]
        for counter in batch:
            await loop.create_connection(lambda c=counter: c, "127.0.0.1", port)  # type: ignore[misc]
        await asyncio.wait_for(asyncio.gather(*(c.connected for c in batch)), 30)
        clients.extend(batch)
    return clients


async def publish(port: int, channel: str, pubs: int) -> None:
    commands = b"\n".join(
        orjson.dumps({"method": "publish", "params": {"channel": channel, "data": {"n": i, "pad": "x" * 60}}})
        for i in range(pubs)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /api HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Length: {len(commands)}\r\n"
        f"\r\n".encode()
        + commands
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"publish failed: {head!r}")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    answer = await asyncio.wait_for(reader.readexactly(length), 30)
    if b'"error"' in answer:
        raise RuntimeError(f"publish failed: {answer[:200]!r}")
    writer.close()


async def burst(port: int, channel: str, clients: list[Counter], pubs: int) -> float:
    target = [c.count + pubs for c in clients]
    started = time.monotonic()
    await publish(port, channel, pubs)
    deadline = started + 60
    while any(c.count < t for c, t in zip(clients, target, strict=True)):
        if time.monotonic() > deadline:
            missing = sum(max(0, t - c.count) for c, t in zip(clients, target, strict=True))
            raise RuntimeError(f"{channel}: {missing} deliveries missing after 60 s")
        await asyncio.sleep(0.001)
    return time.monotonic() - started


async def measure(port: int, shard_pids: dict[str, int], opts: argparse.Namespace) -> dict[str, list[float]]:
    ws = await open_clients(port, opts.clients, websocket_request, "ws")
    hs = await open_clients(port, opts.clients, http_stream_request, "hs")
    spans: dict[str, list[float]] = {"websocket": [], "http_stream": []}
    cpu: dict[str, float] = {"websocket": 0.0, "http_stream": 0.0}
    order = [("websocket", "bench-ws", ws), ("http_stream", "bench-hs", hs)]
    await burst(port, "bench-ws", ws, opts.pubs)  # warm-up
    await burst(port, "bench-hs", hs, opts.pubs)
    for round_no in range(opts.rounds):
        for name, channel, clients in order if round_no % 2 == 0 else order[::-1]:
            meter = CpuMeter(shard_pids)
            meter.start()
            spans[name].append(await burst(port, channel, clients, opts.pubs))
            cpu[name] += sum(meter.stop().values())
    lost = sum(c.lost for c in ws + hs)
    for client in ws + hs:
        client.transport.close()
    if lost:
        raise RuntimeError(f"{lost} clients were disconnected during the run")
    deliveries = opts.clients * opts.pubs
    return {
        name: [deliveries / span for span in spans[name]] + [cpu[name] / (deliveries * opts.rounds)]
        for name in spans
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--pubs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=8)
    opts = parser.parse_args(argv)
    extra = {"http_stream": True, "ping_interval": "300s", "log_level": "warn", "client_channel_limit": 8}
    server = ServerProcess(Path(tempfile.mkdtemp(prefix="emulation-fanout-")), 2, extra).start()
    try:
        pids = {f"shard-{index}": pid for index, pid in server.shard_pids().items()}
        found = asyncio.run(measure(server.port, pids, opts))
    finally:
        server.stop()
    ws, hs = found["websocket"], found["http_stream"]
    ws_rate, hs_rate = statistics.median(ws[:-1]), statistics.median(hs[:-1])
    print(f"- machine: {machine()}; commit {git_commit()}")
    print(
        f"- command: `.venv/bin/python -m bench.emulation_fanout_bench --clients {opts.clients} "
        f"--pubs {opts.pubs} --rounds {opts.rounds}`"
    )
    print("| transport | deliveries/s (median of rounds) | shard CPU per delivery |")
    print("|---|---|---|")
    print(f"| WebSocket (JSON) | {ws_rate:,.0f} | {ws[-1] * 1e6:.1f} µs |")
    print(f"| http_stream (JSON) | {hs_rate:,.0f} | {hs[-1] * 1e6:.1f} µs |")
    print(f"| http_stream / WebSocket | {hs_rate / ws_rate:.2f} | {hs[-1] / ws[-1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
