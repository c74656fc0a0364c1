"""kill -9 under traffic: what the subscribers of a history channel get, and how fast it heals.

One run starts a 2-shard server (the ``hist`` namespace keeps history and allows recovery), connects
``--subscribers`` WebSocket clients on shard 0 with recoverable subscriptions to one channel written by
shard 1, and ``--plain`` clients subscribed without position. They behave like the SDKs: on unsubscribe
2500 they subscribe again, recovering from the last position they saw. A publisher thread publishes
``{"n": k}`` through the API every ``--interval`` seconds; after ``--before`` seconds the victim
(``--kill writer``: shard 1; ``router``) gets SIGKILL, and publishing goes on for ``--after`` seconds
once the API answers again.

Reported: how long the publish API failed, the time from the kill to the first acknowledged publication,
to the subscribers being told (2500) and to their resubscribe; publications acknowledged after the
victim was back and how many of them each subscriber got (the target: all); publications acknowledged
before the kill and lost, and whether each subscriber that lost one was told.

    .venv/bin/python -m bench.writer_restart_bench --kill writer
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import connect as ws_connect

from bench.channel_features_bench import start_server
from bench.connections_bench import ROOT, SECRET, BenchError, HttpClient, git_commit, machine
from broker.auth import encode_token
from broker.hashing import shard_for_user, writer_for

NAMESPACE = {
    "name": "hist",
    "history_size": 10_000,
    "history_ttl": "300s",
    "allow_subscribe_for_client": True,
    "allow_recovery": True,
}


@dataclass
class Options:
    kill: str = "writer"
    subscribers: int = 10
    plain: int = 2
    interval: float = 0.02
    before: float = 1.0
    after: float = 3.0
    append_results: Path | None = None


@dataclass
class Follower:
    positioned: bool
    received: list[tuple[int, int, str]] = field(default_factory=list)  # (n, offset, epoch)
    told_at: list[float] = field(default_factory=list)
    resubscribed_at: list[float] = field(default_factory=list)
    recovered: list[bool] = field(default_factory=list)


class Publisher(threading.Thread):
    def __init__(self, port: int, channel: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.channel, self.interval = port, channel, interval
        self.acked: dict[int, tuple[float, str]] = {}  # n → (time acknowledged, epoch)
        self.failed: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        client: HttpClient | None = None
        while not self.stop.is_set():
            try:
                if client is None:
                    client = HttpClient(self.port, timeout=10)
                answer = client.api("publish", {"channel": self.channel, "data": {"n": n}})
                self.acked[n] = (time.monotonic(), answer["result"]["epoch"])
            except (OSError, BenchError, KeyError):
                self.failed.append(time.monotonic())
                if client is not None:
                    client.sock.close()
                    client = None
            n += 1
            time.sleep(self.interval)
        if client is not None:
            client.sock.close()


async def follow(port: int, user: str, channel: str, follower: Follower, stop: asyncio.Event) -> None:
    token = encode_token({"sub": user, "exp": int(time.time()) + 3600}, SECRET)
    async with ws_connect(f"ws://127.0.0.1:{port}/connection/websocket", compression=None) as ws:
        ids = iter(range(1, 1 << 30))
        await ws.send(orjson.dumps({"id": next(ids), "connect": {"token": token}}).decode())
        orjson.loads(await ws.recv())
        sub: dict[str, Any] = {"channel": channel}
        if follower.positioned:
            sub["recoverable"] = True
        await ws.send(orjson.dumps({"id": next(ids), "subscribe": sub}).decode())
        position = (0, "")
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            for line in str(frame).splitlines():
                message = orjson.loads(line)
                if not message:
                    await ws.send("{}")  # pong
                    continue
                if "subscribe" in message:
                    result = message["subscribe"]
                    position = (result.get("offset", 0), result.get("epoch", ""))
                    if result.get("was_recovering"):
                        follower.resubscribed_at.append(time.monotonic())
                        follower.recovered.append(bool(result.get("recovered")))
                    for pub in result.get("publications", []):
                        follower.received.append((pub["data"]["n"], pub.get("offset", 0), position[1]))
                        position = (pub.get("offset", 0), position[1])
                    continue
                push = message.get("push") or {}
                if "pub" in push:
                    pub = push["pub"]
                    follower.received.append((pub["data"]["n"], pub.get("offset", 0), position[1]))
                    position = (pub.get("offset", position[0]), position[1])
                elif "unsubscribe" in push:
                    follower.told_at.append(time.monotonic())
                    again = {**sub, "recover": True, "offset": position[0], "epoch": position[1]}
                    await ws.send(orjson.dumps({"id": next(ids), "subscribe": again}).decode())


def users_on(shard: int, count: int, prefix: str) -> list[str]:
    found: list[str] = []
    k = 0
    while len(found) < count:
        user = f"{prefix}{k}"
        if shard_for_user(user, 2) == shard:
            found.append(user)
        k += 1
    return found


def pids(port: int) -> dict[int, int]:
    with HttpClient(port, timeout=2) as client:
        shards = client.api("info", {})["result"]["nodes"][0]["shards"]
    return {s["index"]: int(s["pid"]) for s in shards if "pid" in s}


async def measure(opts: Options, workdir: Path) -> list[tuple[str, str]]:
    server = start_server(workdir, 2, {"namespaces": [NAMESPACE], "allow_subscribe_for_client": True})
    try:
        channel = next(f"hist:w{i}" for i in range(1000) if writer_for(f"hist:w{i}", 2) == 1)
        stop = asyncio.Event()
        followers = [Follower(True) for _ in range(opts.subscribers)] + [
            Follower(False) for _ in range(opts.plain)
        ]
        users = users_on(0, len(followers), "bench-user-")
        tasks = [
            asyncio.create_task(follow(server.port, user, channel, f, stop))
            for user, f in zip(users, followers, strict=True)
        ]
        await asyncio.sleep(1.0)
        publisher = Publisher(server.port, channel, opts.interval)
        publisher.start()
        await asyncio.sleep(opts.before)
        victim = (
            server.router_pid() if opts.kill == "router" else (await asyncio.to_thread(pids, server.port))[1]
        )
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        deadline = killed_at + 30
        while True:
            with contextlib.suppress(OSError, BenchError, KeyError):
                if (
                    opts.kill == "router"
                    or (await asyncio.to_thread(pids, server.port)).get(1, victim) != victim
                ):
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{opts.kill} not back within 30 s")
            await asyncio.sleep(0.05)
        back_at = time.monotonic()
        await asyncio.sleep(opts.after)
        publisher.stop.set()
        await asyncio.to_thread(publisher.join, 15)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.stop()

    acked = publisher.acked
    old_epoch = acked[min(acked)][1]
    if opts.kill == "router":
        after = {n for n, (at, _) in acked.items() if at >= killed_at}
    else:
        after = {n for n, (_, epoch) in acked.items() if epoch != old_epoch}
    before = {n for n, (at, _) in acked.items() if at < killed_at}
    first_ack = min((at for at, _ in (acked[n] for n in after)), default=float("nan"))
    outage = [t for t in publisher.failed if t >= killed_at]
    positioned = [f for f in followers if f.positioned]
    told = [min(t for t in f.told_at if t >= killed_at) - killed_at for f in positioned if f.told_at]
    resub = [
        min(t for t in f.resubscribed_at if t >= killed_at) - killed_at
        for f in positioned
        if f.resubscribed_at
    ]
    complete = [after <= {n for n, _, _ in f.received} for f in followers]
    delivered = sum(len(after & {n for n, _, _ in f.received}) for f in followers)
    lost_before = [len(before - {n for n, _, _ in f.received}) for f in followers]
    untold_loss = sum(
        1 for f, lost in zip(followers, lost_before, strict=True) if lost and f.positioned and not f.told_at
    )
    dupes = sum(len(f.received) - len({n for n, _, _ in f.received}) for f in followers)

    answers = [r for f in positioned for r in f.recovered]

    def ms(values: list[float]) -> str:
        return f"{max(values) * 1000:,.0f} ms (max of {len(values)})" if values else "—"

    return [
        (
            "victim back (kill → pid in /api/info, or router at once)",
            f"{(back_at - killed_at) * 1000:,.0f} ms",
        ),
        (
            "publish API failing after the kill",
            f"{len(outage)} requests, {(max(outage) - killed_at) * 1000 if outage else 0:,.0f} ms",
        ),
        ("kill → first publication acknowledged after it", f"{(first_ack - killed_at) * 1000:,.0f} ms"),
        ("kill → positioned subscribers told (2500)", ms(told)),
        ("kill → positioned subscribers resubscribed", ms(resub)),
        (
            "resubscribes answered recovered: false / true",
            f"{answers.count(False)} / {answers.count(True)}",
        ),
        ("publications acknowledged after the kill", f"{len(after)}"),
        ("… delivered (all subscribers)", f"{delivered} of {len(after) * len(followers)}"),
        ("subscribers with every one of them", f"{sum(complete)} of {len(followers)}"),
        ("acknowledged before the kill, lost (per subscriber, max)", f"{max(lost_before)}"),
        ("subscribers that lost one without being told", f"{untold_loss}"),
        ("duplicates", f"{dupes}"),
    ]


def report(opts: Options, rows: list[tuple[str, str]]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f".venv/bin/python -m bench.writer_restart_bench --kill {opts.kill} --subscribers {opts.subscribers} "
        f"--plain {opts.plain} --interval {opts.interval} --after {opts.after}"
    )
    width = max(len(name) for name, _ in rows)
    table = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    table += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    return "\n".join(
        [
            f"### {when}, commit {git_commit()}: kill -9 of the {opts.kill} under traffic",
            "",
            f"- machine: {machine()}; clients and publisher share the cores with the server",
            f"- command: `{command}`",
            f"- shape: {opts.subscribers} recoverable + {opts.plain} non-positioned subscribers on shard 0, "
            f"channel written by shard 1, one API publication every {opts.interval * 1000:.0f} ms",
            "",
            *table,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill", choices=("writer", "router"), default="writer")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--plain", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    args = parser.parse_args(argv)
    opts = Options(
        kill=args.kill,
        subscribers=args.subscribers,
        plain=args.plain,
        interval=args.interval,
        after=args.after,
        append_results=Path(args.append_results) if args.append_results else None,
    )
    with tempfile.TemporaryDirectory(prefix="writer-restart-bench-") as tmp:
        try:
            rows = asyncio.run(asyncio.wait_for(measure(opts, Path(tmp)), 120))
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 2
    text = report(opts, rows)
    print(text)
    if opts.append_results is not None:
        with open(opts.append_results, "a") as out:
            out.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
