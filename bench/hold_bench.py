"""Held connections under pings: does the server keep every healthy client while it is busy?

Starts a real server (supervisor, router, N shards) on a free port with a short ``ping_interval`` (so
that three ping rounds fit in a short run; the interval is in the report), then:

1. G generator processes (:mod:`bench.ws_loadgen`, at most 10,000 sockets each, source addresses
   ``127.<g+1>.x.y``) open C WebSocket connections (JSON, one HS256 token per user ``u<k>``) and
   subscribe every one of them to channel ``hold``. The generators answer every ping (``{}``) with one
   pong, the moment they read it;
2. the connections are held for ``--intervals`` ping intervals. Meanwhile one publication to ``hold``
   goes out every ``--publish-every`` seconds through ``/api/publish`` (C deliveries each), so that the
   shards are busy and their one-second tickers run late, as in production broadcasts;
3. every generator reports what it saw: pings, deliveries, and every connection the server ended, by
   close code. Then ``info`` must still count C clients, and the generators close their sockets.

Correctness (exit status): every connection connected and subscribed, none ended by the server, every
publication delivered to every subscriber, and at least ``--intervals`` pings per connection. Also
reported: CPU of the router and the shards during the hold, and shard RSS per connection.

    .venv/bin/python -m bench.hold_bench                      # 50,000 connections, 4 shards, 5 generators
    .venv/bin/python -m bench.hold_bench --quick              # 2,000 connections, ~30 s
    .venv/bin/python -m bench.hold_bench --append-results     # also append the table to RESULTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.connections_bench import (
    MAX_SOCKETS_PER_GENERATOR,
    ROOT,
    SECRET,
    BenchError,
    CpuMeter,
    HttpClient,
    ServerProcess,
    git_commit,
    machine,
    rss_bytes,
    run_and_report,
    split,
)
from bench.fanout_bench import Child

CHANNEL = "hold"


@dataclass
class Options:
    connections: int = 50_000
    shards: int = 4
    generators: int = 5
    concurrency: int = 200
    ping_interval: int = 10
    pong_timeout: int = 8
    intervals: int = 3
    publish_every: float = 2.0
    settle: float = 1.0
    append_results: Path | None = None
    keep: bool = False


@dataclass
class Outcome:
    options: Options
    rows: list[tuple[str, str]] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    closes: Counter[str] = field(default_factory=Counter)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, shown: str, value: float | None = None) -> None:
        self.rows.append((name, shown))
        if value is not None:
            self.numbers[name] = value

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)


def configure_server(workdir: Path, opts: Options) -> ServerProcess:
    server = ServerProcess(workdir, opts.shards)
    config = orjson.loads(server.config_path.read_bytes())
    config.update(
        {
            "allow_subscribe_for_client": True,
            "ping_interval": f"{opts.ping_interval}s",
            "pong_timeout": f"{opts.pong_timeout}s",
        }
    )
    server.config_path.write_bytes(orjson.dumps(config))
    return server


def start_generators(port: int, opts: Options, workdir: Path) -> list[Child]:
    rungs = orjson.dumps([[CHANNEL, opts.connections, 1]]).decode()
    children = []
    for i, (start, count) in enumerate(split(opts.connections, opts.generators)):
        args = ["bench.ws_loadgen", "--target", "switchboard", "--port", str(port), "--secret", SECRET]
        args += ["--start", str(start), "--count", str(count), "--net", str(i + 1)]
        args += ["--concurrency", str(opts.concurrency), "--rungs", rungs, "--hold-timeout", "1800"]
        children.append(Child(f"hold-gen{i}", args, workdir))
    for child in children:
        child.next("ready", 60)
    return children


def close_code(ending: str) -> str:
    """``ConnectionError: close 3501 bad request`` → ``3501``; anything else as it is."""
    found = re.search(r"close (\d+)", ending)
    return found.group(1) if found else ending


def run(opts: Options) -> Outcome:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server's shards
    if -(-opts.connections // opts.generators) > MAX_SOCKETS_PER_GENERATOR:
        raise BenchError("more than 10,000 sockets per generator; use more generators")
    outcome = Outcome(opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-hold-"))
    server = configure_server(workdir, opts)
    generators: list[Child] = []
    try:
        server.start(timeout=60)
        with HttpClient(server.port, timeout=60) as client:
            shards = client.api("info", {})["result"]["nodes"][0]["shards"]
            shard_pids = {f"shard-{s['index']}": int(s["pid"]) for s in shards}
            pids = {"router": server.router_pid()} | shard_pids
            generators = start_generators(server.port, opts, workdir)
            time.sleep(opts.settle)
            rss_before = sum(rss_bytes(pid) for pid in shard_pids.values())
            setup = time.monotonic()
            for gen in generators:
                gen.tell("go")
            reports = [gen.next("connected", 120 + opts.connections / 100) for gen in generators]
            connected = sum(r["connected"] for r in reports)
            errors = {k: v for r in reports for k, v in r["errors"].items()}
            outcome.check(
                "every connection connected", connected == opts.connections, f"{connected:,} {errors}"
            )
            for gen in generators:
                gen.tell("subscribe")
            subscribed = [gen.next("subscribed", 120) for gen in generators]
            replies = sum(s["replies"] for s in subscribed)
            sub_errors = {k: v for s in subscribed for k, v in s["errors"].items()}
            outcome.check(
                "every subscribe answered without error",
                replies == opts.connections and not sub_errors,
                f"{replies:,}/{opts.connections:,} {sub_errors}",
            )
            outcome.add("set-up (connect + subscribe)", f"{time.monotonic() - setup:.1f} s")
            time.sleep(opts.settle)
            rss_after = sum(rss_bytes(pid) for pid in shard_pids.values())
            per_conn = (rss_after - rss_before) / max(1, connected)
            outcome.add("shard RSS per connection (subscribed)", f"{per_conn / 1024:.2f} KiB", per_conn)
            delivered, published = hold(outcome, client, generators, pids, opts)
            info = client.api("info", {})["result"]["nodes"][0]
            outcome.check(
                "info still counts every connection after the hold",
                info["num_clients"] == opts.connections,
                f"num_clients={info['num_clients']}",
            )
            finals = [report(gen, workdir) for gen in generators]
        pings = sum(int(r["pings"]) for r in finals)
        for r in finals:
            for ending, count in r["endings"].items():
                outcome.closes[close_code(ending)] += int(count)
        lost = sum(int(r["ended_early"]) for r in finals)
        expected = published * connected
        outcome.add("connections held", f"{connected - lost:,} of {connected:,}")
        outcome.add(
            "pings answered per connection", f"{pings / max(1, connected):.2f}", pings / max(1, connected)
        )
        outcome.add("publications / deliveries", f"{published} / {delivered:,} of {expected:,}")
        outcome.check(
            "no connection ended by the server (close codes counted)",
            lost == 0,
            f"{lost} ended: {dict(outcome.closes) or 'none'}",
        )
        outcome.check(
            f"pings answered: at least {opts.intervals} per connection on average",
            pings >= opts.intervals * connected,
            f"{pings:,} pings over {connected:,} connections",
        )
        outcome.check("every publication reached every subscriber", delivered == expected, f"{delivered:,}")
    finally:
        for gen in generators:
            with contextlib.suppress(BenchError):
                gen.stop(timeout=30)
        server.stop()
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def hold(
    outcome: Outcome, client: HttpClient, generators: list[Child], pids: dict[str, int], opts: Options
) -> tuple[int, int]:
    """Hold for the given ping intervals, publishing to every subscriber now and then; (delivered, sent)."""
    spec = orjson.dumps({"channels": [CHANNEL], "per_burst": 1}).decode()
    for gen in generators:
        gen.completed = set()
        gen.tell(f"phase {spec}")
    for gen in generators:
        gen.expect_per_burst = int(gen.next("armed", 60)["expect"])
    meter = CpuMeter(pids)
    meter.start()
    began = time.monotonic()
    end = began + opts.intervals * opts.ping_interval + 1  # every bucket's turn comes round `intervals` times
    burst = 0
    late = 0
    while time.monotonic() < end:
        fired = time.monotonic()
        data = {"t": fired, "b": burst, "i": 0}
        client.api("publish", {"channel": CHANNEL, "data": data})
        deadline = fired + 30
        for gen in generators:
            if gen.expect_per_burst and not gen.wait_burst(burst, deadline):
                late += 1
        burst += 1
        time.sleep(max(0.0, fired + opts.publish_every - time.monotonic()))
    held = time.monotonic() - began
    spent = meter.stop()
    outcome.add("held for", f"{held:.1f} s ({opts.intervals} ping intervals of {opts.ping_interval} s)")
    for role, seconds in spent.items():
        outcome.add(f"CPU during the hold: {role}", f"{seconds / held * 100:.1f} % of a core", seconds / held)
    shards = sum(v for role, v in spent.items() if role.startswith("shard"))
    outcome.add(
        "CPU during the hold: shards, per connection per second",
        f"{shards / held / max(1, opts.connections) * 1e6:.2f} µs",
    )
    delivered = 0
    for gen in generators:
        delivered += sum(1 for b in range(burst) if b in gen.completed) * gen.expect_per_burst
    if late:
        outcome.add("bursts not complete within 30 s (generator, burst pairs)", str(late))
    return delivered, burst


def report(gen: Child, workdir: Path) -> dict[str, Any]:
    gen.tell(f"report {workdir / f'{gen.index}-latencies.bin'}")
    result: dict[str, Any] = gen.next("report", 60)
    return result


def report_text(outcome: Outcome) -> str:
    opts = outcome.options
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    width = max(len(name) for name, _ in outcome.rows) if outcome.rows else 10
    lines = [f"| {'metric'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {name.ljust(width)} | {shown} |" for name, shown in outcome.rows]
    checks = [f"- check {'ok' if ok else 'FAILED'}: {name} ({detail})" for name, ok, detail in outcome.checks]
    return "\n".join(
        [
            f"### Held connections under pings, {when}, commit {git_commit()}",
            "",
            f"- machine: {machine()}; load generators share the cores with the server",
            f"- command: `{command_line(opts)}`",
            f"- shape: {opts.connections:,} WebSocket (JSON) connections subscribed to one channel, "
            f"{opts.shards} shards, {opts.generators} generator processes; `ping_interval` "
            f"{opts.ping_interval} s (default 25 s, shortened so that {opts.intervals} rounds fit), "
            f"`pong_timeout` {opts.pong_timeout} s; one publication to all of them every "
            f"{opts.publish_every:g} s during the hold",
            "",
            *lines,
            "",
            *checks,
            "",
        ]
    )


def command_line(opts: Options) -> str:
    return (
        ".venv/bin/python -m bench.hold_bench "
        f"--connections {opts.connections} --shards {opts.shards} --generators {opts.generators} "
        f"--ping-interval {opts.ping_interval} --pong-timeout {opts.pong_timeout} "
        f"--intervals {opts.intervals} --publish-every {opts.publish_every:g}"
    )


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--generators", type=int, default=5, help="load-generator processes (≤ 10k each)")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight per generator")
    parser.add_argument("--ping-interval", type=int, default=10, help="the server's ping_interval, seconds")
    parser.add_argument("--pong-timeout", type=int, default=8, help="the server's pong_timeout, seconds")
    parser.add_argument("--intervals", type=int, default=3, help="ping intervals to hold the connections")
    parser.add_argument("--publish-every", type=float, default=2.0, help="seconds between publications")
    parser.add_argument("--quick", action="store_true", help="2,000 connections, 2 shards, 1 generator")
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log)")
    args = parser.parse_args(argv)
    if args.quick:
        return quick_options()
    return Options(
        connections=args.connections,
        shards=args.shards,
        generators=args.generators,
        concurrency=args.concurrency,
        ping_interval=args.ping_interval,
        pong_timeout=args.pong_timeout,
        intervals=args.intervals,
        publish_every=args.publish_every,
        append_results=Path(args.append_results) if args.append_results else None,
        keep=args.keep,
    )


def quick_options() -> Options:
    return Options(
        connections=2_000, shards=2, generators=1, ping_interval=3, pong_timeout=2, publish_every=0.5
    )


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report_text)


if __name__ == "__main__":
    sys.exit(main())
