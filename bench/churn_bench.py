"""Connection churn: does memory come back after many short client lives?

Starts a real server (supervisor, router, N shards) on a free port, then runs C cycles of
connect → subscribe → a refused second subscribe (error 105) → publish → close
(:mod:`bench.churn_loadgen`, G generator processes, each with a fixed number of cycles in flight) in
rounds of S cycles. After each round every client is gone: the bench waits ``--settle`` seconds, checks
that ``info`` counts no client, no subscription and no channel, and reads ``VmRSS`` of the router and of
every shard from ``/proc/<pid>/status``. RSS after round 1 (the first S cycles: allocator pools, caches
and imports warmed up) is the reference; the target is that RSS after the last round is within 5 % of
it, for the router and for each shard. ``--idle`` adds one more
sample after that many seconds without traffic.

Every cycle must succeed (connect reply, subscribe reply, the 105 error reply, publish reply, the
publication's push, the server's close frame answering ours with 1000), and the server must count
nothing left: those are the correctness checks that set the exit status; the RSS target is reported
as ``ok``/``MISSED``.

    .venv/bin/python -m bench.churn_bench                       # 100,000 cycles, RSS every 10,000
    .venv/bin/python -m bench.churn_bench --quick               # 2,000 cycles, RSS every 500
    .venv/bin/python -m bench.churn_bench --append-results      # also append the table to RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from bench.connections_bench import (
    ROOT,
    SECRET,
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
from tests.support.redis_server import RedisServer

TARGET_GROWTH = 0.05


@dataclass
class Options:
    cycles: int = 100_000
    every: int = 10_000
    shards: int = 2
    generators: int = 2
    concurrency: int = 50
    users: int = 100
    channels: int = 1_000
    settle: float = 2.0
    idle: float = 0.0
    refused: bool = True
    append_results: Path | None = None
    keep: bool = False
    redis: bool = False  # the node on the Redis engine, with a redis-server of its own


@dataclass
class Sample:
    cycles: int
    rss: dict[str, int]  # role → bytes
    rate: float = 0.0  # cycles/s of the round that ended here
    cycle_p99: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # role → CPU seconds in the round


@dataclass
class Outcome:
    options: Options
    samples: list[Sample] = field(default_factory=list)
    closes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0
    failed: int = 0
    pings: int = 0
    numbers: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)


def configure_server(workdir: Path, shards: int, redis_address: str = "") -> ServerProcess:
    server = ServerProcess(workdir, shards)
    config = orjson.loads(server.config_path.read_bytes())
    config.update({"allow_subscribe_for_client": True, "allow_publish_for_subscriber": True})
    if redis_address:
        config.update({"engine": "redis", "redis_address": redis_address})
    server.config_path.write_bytes(orjson.dumps(config))
    return server


def start_generators(port: int, opts: Options, workdir: Path) -> list[Child]:
    children = []
    for i in range(opts.generators):
        args = ["bench.churn_loadgen", "--port", str(port), "--secret", SECRET, "--net", str(i + 1)]
        args += ["--users", str(opts.users), "--channels", str(opts.channels)]
        args += ["--concurrency", str(opts.concurrency)]
        if not opts.refused:
            args.append("--no-refused")
        children.append(Child(f"churn-gen{i}", args, workdir))
    for child in children:
        child.next("ready", 30)
    return children


def leftovers(client: HttpClient) -> dict[str, int]:
    """What the server still counts: clients, subscriptions, channels (every shard)."""
    shards = client.api("info", {})["result"]["nodes"][0]["shards"]
    keys = ("num_clients", "num_subs", "num_channels")
    return {key: sum(int(s.get(key, 0)) for s in shards) for key in keys}


def sample_rss(pids: dict[str, int]) -> dict[str, int]:
    return {role: rss_bytes(pid) for role, pid in pids.items()}


def run(opts: Options) -> Outcome:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    outcome = Outcome(opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-churn-"))
    redis = RedisServer(workdir / "redis").start() if opts.redis else None
    server = configure_server(workdir, opts.shards, redis.address if redis is not None else "")
    generators: list[Child] = []
    try:
        server.start()
        with HttpClient(server.port) as client:
            shards = client.api("info", {})["result"]["nodes"][0]["shards"]
            pids = {"router": server.router_pid()} | {f"shard-{s['index']}": int(s["pid"]) for s in shards}
            generators = start_generators(server.port, opts, workdir)
            time.sleep(opts.settle)
            outcome.samples.append(Sample(0, sample_rss(pids)))
            meter = CpuMeter(pids)
            left: dict[str, int] = {}
            done = 0
            while done < opts.cycles:
                size = min(opts.every, opts.cycles - done)
                meter.start()
                began = time.monotonic()
                for gen, (start, count) in zip(generators, split(size, len(generators)), strict=True):
                    gen.tell(f"run {done + start} {count}")
                reports = [gen.next("ran", 60 + size / 20) for gen in generators]
                elapsed = time.monotonic() - began
                spent = meter.stop()
                for report in reports:
                    outcome.ok += report["ok"]
                    outcome.failed += report["failed"]
                    outcome.pings += report["pings"]
                    outcome.closes.update(report["closes"])
                    outcome.errors.update(report["errors"])
                done += size
                time.sleep(opts.settle)
                left = leftovers(client)
                sample = Sample(done, sample_rss(pids), size / elapsed, max(r["cycle_p99"] for r in reports))
                sample.cpu = spent
                outcome.samples.append(sample)
                rss = " ".join(f"{role}={mib(v)}" for role, v in sample.rss.items())
                print(f"{done:>8,} cycles {sample.rate:,.0f}/s  {rss} MiB  left {left}", file=sys.stderr)
            if opts.idle > 0:
                time.sleep(opts.idle)
                outcome.samples.append(Sample(done, sample_rss(pids)))
            outcome.check(
                "every cycle completed (connect, subscribe, refused subscribe, publish, push, close 1000)",
                outcome.failed == 0 and outcome.ok == opts.cycles and set(outcome.closes) == {"1000"},
                f"{outcome.ok:,} ok, {outcome.failed} failed {dict(outcome.errors)}; "
                f"close codes {dict(outcome.closes)}",
            )
            outcome.check(
                "the server counts no client, subscription or channel afterwards",
                not any(left.values()),
                str(left),
            )
        measure(outcome)
    finally:
        for gen in generators:
            gen.stop(timeout=10)
        server.stop()
        if redis is not None:
            redis.stop()
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def measure(outcome: Outcome) -> None:
    """Growth from the first round's sample to the last round's, per process."""
    rounds = [s for s in outcome.samples if s.rate > 0]  # the idle sample, if any, is shown apart
    if len(rounds) < 2:
        return
    first, last = rounds[0], rounds[-1]
    cycles = last.cycles - first.cycles
    for role in first.rss:
        growth = (last.rss[role] - first.rss[role]) / first.rss[role]
        outcome.numbers[f"{role} growth"] = growth
        outcome.numbers[f"{role} bytes per cycle"] = (last.rss[role] - first.rss[role]) / cycles


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f}"


def report(outcome: Outcome) -> str:
    opts = outcome.options
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    roles = list(outcome.samples[0].rss) if outcome.samples else []
    header = [
        "cycles",
        "cycles/s",
        "cycle p99 ms",
        *(f"{r} RSS MiB" for r in roles),
        "server CPU ms per cycle",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    previous = 0
    for index, sample in enumerate(outcome.samples):
        label = f"{sample.cycles:,}"
        if index == len(outcome.samples) - 1 and opts.idle > 0 and sample.rate == 0 and sample.cycles:
            label += f" + {opts.idle:.0f} s idle"
        cpu = sum(sample.cpu.values()) / max(1, sample.cycles - previous) * 1e3 if sample.cpu else 0.0
        cells = [
            label,
            f"{sample.rate:,.0f}" if sample.rate else "",
            f"{sample.cycle_p99 * 1e3:,.1f}" if sample.rate else "",
            *(mib(sample.rss[r]) for r in roles),
            f"{cpu:.2f}" if sample.cpu else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        previous = sample.cycles
    growth = []
    for role in roles:
        if f"{role} growth" in outcome.numbers:
            value = outcome.numbers[f"{role} growth"]
            per_cycle = outcome.numbers[f"{role} bytes per cycle"]
            verdict = "ok" if value <= TARGET_GROWTH else "MISSED"
            growth.append(f"{role} {value * 100:+.1f} % ({per_cycle:+,.1f} B/cycle) {verdict}")
    rounds = [s for s in outcome.samples if s.rate > 0]
    span = f"{rounds[0].cycles:,} → {rounds[-1].cycles:,}" if rounds else ""
    checks = [f"- check {'ok' if ok else 'FAILED'}: {name} ({detail})" for name, ok, detail in outcome.checks]
    return "\n".join(
        [
            f"### Churn, {when}, commit {git_commit()}",
            "",
            f"- machine: {machine()}; load generators share the cores with the server",
            f"- command: `{command_line(opts)}`",
            f"- shape: {opts.cycles:,} cycles of connect → subscribe → "
            + ("refused subscribe (105) → " if opts.refused else "")
            + f"publish → close over WebSocket "
            f"(JSON), users u0..u{opts.users - 1}, channels churn-0..churn-{opts.channels - 1}, "
            f"{opts.shards} shards, {opts.generators} generators with {opts.concurrency} cycles in flight "
            "each; RSS after each "
            f"{opts.every:,} cycles and a {opts.settle:g} s pause, every client gone; {outcome.pings:,} "
            "pings answered on the way",
            "",
            *lines,
            "",
            f"- RSS growth {span} cycles (target ≤ {TARGET_GROWTH * 100:.0f} %): " + "; ".join(growth),
            *checks,
            "",
        ]
    )


def command_line(opts: Options) -> str:
    text = (
        ".venv/bin/python -m bench.churn_bench "
        f"--cycles {opts.cycles} --every {opts.every} --shards {opts.shards} --generators {opts.generators} "
        f"--concurrency {opts.concurrency} --users {opts.users} --channels {opts.channels}"
    )
    text += f" --idle {opts.idle:g}" if opts.idle else ""
    return text + ("" if opts.refused else " --no-refused") + (" --redis" if opts.redis else "")


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="cycles between RSS samples")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50, help="cycles in flight per generator")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of quiet before each sample")
    parser.add_argument("--idle", type=float, default=0.0, help="one more sample after this long idle")
    parser.add_argument("--no-refused", action="store_true", help="no refused subscribe in the cycles")
    parser.add_argument("--quick", action="store_true", help="2,000 cycles, RSS every 500")
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log)")
    parser.add_argument("--redis", action="store_true", help="the Redis engine (a redis-server for the run)")
    args = parser.parse_args(argv)
    if args.quick:
        return dataclasses.replace(quick_options(), redis=args.redis)
    if args.cycles < 1 or args.every < 1:
        parser.error("--cycles and --every must be positive")
    return Options(
        cycles=args.cycles,
        every=args.every,
        shards=args.shards,
        generators=args.generators,
        concurrency=args.concurrency,
        users=args.users,
        channels=args.channels,
        settle=args.settle,
        idle=args.idle,
        refused=not args.no_refused,
        append_results=Path(args.append_results) if args.append_results else None,
        keep=args.keep,
        redis=args.redis,
    )


def quick_options() -> Options:
    return Options(cycles=2_000, every=500, generators=1, concurrency=20, settle=0.5)


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
