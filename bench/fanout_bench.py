"""WebSocket fan-out benchmark: Switchboard against a bare uvloop ceiling, in one run on the same cores.

One run, in this order:

1. starts Switchboard (supervisor, router, N shards; ``allow_subscribe_for_client``) and the ceiling
   server (:mod:`bench.ceiling_server`), each on free ports, and reads their RSS;
2. starts G trio load generators per server (:mod:`bench.ws_loadgen`, ≤ 10,000 sockets each, source
   addresses ``127.<net>.x.y``, a different ``net`` per generator) and opens C WebSocket connections to
   each server. For Switchboard a connection is upgrade + ``connect`` command with its own JWT + the
   router's handoff to the user's shard + the connect reply; for the ceiling it is the upgrade alone.
   **Connects/s** is C over the time from ``go`` to the last connect reply;
3. after a pause, **idle RSS per connection**: the servers' RSS growth over C (no subscriptions yet);
4. every Switchboard connection subscribes to its channels (one frame of ``subscribe`` commands each);
5. the ladder: for each rung (1, 100, 1k, 10k subscribers of one channel; 10k subscribers over 100
   channels) and each burst shape, the ceiling and Switchboard take turns:

   * **1 per burst**: one publication per channel per burst (the ceiling: one frame, one write);
   * **10 per burst**: ten publications per channel, published back to back (Switchboard: ten pipelined
     ``/api/publish`` requests on one keep-alive connection, or ten ``/api/broadcast`` requests for the
     100-channel rung; the ceiling: ten frames, once with one write per frame and once coalesced into one
     write per socket).

   A burst starts when the bench takes ``t = time.monotonic()``, embeds ``t`` in the data and sends the
   publish requests (or the ceiling's trigger); the next burst starts once every expected delivery of
   this one has arrived (or after a timeout, counting the missing ones as lost). Burst 0 is a warm-up.
   **Deliveries/s** is the deliveries of the measured bursts over the sum of their spans (from ``t`` to
   the last receipt of the burst in any generator); **latency** is receipt time minus ``t`` for every
   delivery (CLOCK_MONOTONIC is shared by every process of the machine);
6. closes everything and checks that no connection was ended early by either server.

Every wait has a timeout and only processes the run started are signalled, by pid. Exit status: 0 when
every check passed, 1 when a check failed, 2 when the run could not complete. Targets are reported as
``ok``/``MISSED`` and do not change the exit status.

    .venv/bin/python -m bench.fanout_bench            # the full ladder, 10,000 connections per server
    .venv/bin/python -m bench.fanout_bench --quick    # 1,000 connections, a short ladder
"""

from __future__ import annotations

import argparse
import array
import contextlib
import math
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.connections_bench import (
    API_KEY,
    ROOT,
    SECRET,
    BenchError,
    CpuMeter,
    Generator,
    HttpClient,
    ServerProcess,
    git_commit,
    machine,
    rss_bytes,
    run_and_report,
    split,
    stop_process,
)
from bench.loadgen import percentile
from bench.profiling import profiled

MAX_SOCKETS_PER_GENERATOR = 10_000
FULL_RUNGS = [("r1", 1, 1), ("r100", 100, 1), ("r1k", 1_000, 1), ("r10k", 10_000, 1), ("m", 10_000, 100)]
QUICK_RUNGS = [("r1", 1, 1), ("r100", 100, 1), ("r1k", 1_000, 1), ("m", 1_000, 10)]
# Data padding that makes Switchboard's push payload about 100 bytes, like the ceiling's frames.
PAD = "x" * 20

TARGET_RATIO_ONE = 0.85
TARGET_RATIO_TEN = 0.5
TARGET_P99_FACTOR = 1.2
TARGET_RSS = 4096
TARGET_CONNECTS = 5_000


@dataclass
class Options:
    connections: int = 10_000
    shards: int = 2
    generators: int = 2
    concurrency: int = 200
    rungs: list[tuple[str, int, int]] = field(default_factory=lambda: list(FULL_RUNGS))
    deliveries: int = 200_000  # per phase, roughly: bursts = deliveries / deliveries per burst
    min_bursts: int = 5
    max_bursts: int = 300
    burst_timeout: float = 10.0
    settle: float = 1.0
    quick: bool = False
    append_results: Path | None = None
    profile: Path | None = None
    keep: bool = False


@dataclass
class PhaseResult:
    target: str  # "switchboard", "ceiling", "ceiling (1 write per frame)"
    rung: str
    per_burst: int
    bursts: int
    deliveries: int
    expected: int
    rate: float
    p50: float
    p99: float
    frame_bytes: float
    per_read: (
        float  # deliveries per recv(): an upper bound on frames per server write (a read may take several)
    )
    cpu: dict[str, float]


@dataclass
class Outcome:
    options: Options
    summary: list[tuple[str, str, str, str]] = field(default_factory=list)
    phases: list[PhaseResult] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, value: float, shown: str, target: str = "", passed: bool | None = None) -> None:
        self.numbers[name] = value
        verdict = "" if passed is None else ("ok" if passed else "MISSED")
        self.summary.append((name, shown, target, verdict))

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)


# -- processes -------------------------------------------------------------------------------------------


class Child(Generator):
    """A child process speaking JSON lines on stdout (and commands on stdin), with an event queue."""

    def __init__(self, name: str, args: list[str], workdir: Path, program: list[str] | None = None) -> None:
        """Runs ``python -m *args``, or ``*program, *args`` when a program is given."""
        import queue
        import threading

        self.index = name  # type: ignore[assignment]
        self.stderr_path = workdir / f"{name}.log"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [*(program or [sys.executable, "-m"]), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
            )
        self.events = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()
        self.completed: set[int] = set()
        self.expect_per_burst = 0
        self.endings: dict[str, int] = {}

    def next(self, name: str, timeout: float) -> dict[str, Any]:
        """The next ``name`` event; ``burst`` events met on the way are noted, not returned."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise BenchError(f"{self.index}: no {name!r} within {timeout:.0f}s") from None
            if event.get("event") == "burst" and name != "burst":
                self.completed.add(int(event["b"]))
                continue
            if event.get("event") != name:
                tail = self.stderr_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"{self.index}: expected {name!r}, got {event}\n{tail}")
            return event

    def wait_burst(self, burst: int, deadline: float) -> bool:
        import queue

        while burst not in self.completed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                return False
            if event.get("event") == "burst":
                self.completed.add(int(event["b"]))
            elif event.get("event") == "exited":
                raise BenchError(
                    f"{self.index} exited:\n{self.stderr_path.read_text(errors='replace')[-2000:]}"
                )
        return True

    def stop(self, timeout: float = 20.0) -> int:
        """Close its sockets and let it exit; returns how many connections the server ended early."""
        ended_early = -1
        if self.proc.poll() is None:
            self.tell("stop")
            with contextlib.suppress(BenchError):
                closed = self.next("closed", timeout)
                ended_early = int(closed["ended_early"])
                self.endings = closed.get("endings", {}) | closed.get("other_pushes", {})
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        stop_process(self.proc, timeout)
        return ended_early


class Ceiling:
    """A server speaking the ceiling's control protocol: :mod:`bench.ceiling_server` by default."""

    def __init__(
        self,
        workdir: Path,
        name: str = "ceiling",
        args: list[str] | None = None,
        program: list[str] | None = None,
    ) -> None:
        self.child = Child(name, args or ["bench.ceiling_server"], workdir, program)
        ready = self.child.next("ready", 20)
        self.pid = int(ready["pid"])
        self.port = int(ready["port"])
        self.control = socket.create_connection(("127.0.0.1", int(ready["control_port"])), timeout=60)
        self.control.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.control.makefile("rb")

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self.control.sendall(orjson.dumps(command) + b"\n")
        line = self.reader.readline()
        if not line:
            raise BenchError("the ceiling server closed its control connection")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.control.close()
        stop_process(self.child.proc, 10)


class Publisher(HttpClient):
    """The server API over one keep-alive connection: pipelined requests, or a request left in flight."""

    def send(self, path: str, bodies: list[bytes]) -> None:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\nContent-Length: "
        self.sock.sendall(b"".join(f"{head}{len(b)}\r\n\r\n".encode("latin-1") + b for b in bodies))

    def answers(self, path: str, count: int) -> None:
        for _ in range(count):
            status, payload = self.response()
            if status != 200 or b'"error"' in payload:
                raise BenchError(f"{path}: HTTP {status}: {payload[:200]!r}")

    def response(self) -> tuple[int, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        total = end + 4 + length
        while len(self.buffer) < total:
            self._fill()
        payload = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        return int(lines[0].split()[1]), payload


def start_switchboard(workdir: Path, shards: int) -> ServerProcess:
    server = ServerProcess(workdir, shards)
    config = orjson.loads(server.config_path.read_bytes())
    config.update({"allow_subscribe_for_client": True})
    server.config_path.write_bytes(orjson.dumps(config))
    server.start()
    return server


def start_generators(target: str, port: int, first_net: int, opts: Options, workdir: Path) -> list[Child]:
    rungs = orjson.dumps(opts.rungs).decode()
    children = []
    for i, (start, count) in enumerate(split(opts.connections, opts.generators)):
        args = ["bench.ws_loadgen", "--target", target, "--port", str(port), "--secret", SECRET]
        args += ["--start", str(start), "--count", str(count), "--net", str(first_net + i)]
        args += ["--concurrency", str(opts.concurrency), "--rungs", rungs]
        children.append(Child(f"{target}-gen{i}", args, workdir))
    return children


# -- phases ----------------------------------------------------------------------------------------------


def connect(
    outcome: Outcome, label: str, gens: list[Child], meter_pids: dict[str, int], opts: Options
) -> float:
    for gen in gens:
        gen.next("ready", 60)
    meter = CpuMeter(meter_pids | {gen.index: gen.proc.pid for gen in gens})
    with profiled(opts.profile, f"connect-{label}", meter_pids):
        meter.start()
        for gen in gens:
            gen.tell("go")
        reports = [gen.next("connected", 90 + opts.connections / 100) for gen in gens]
        spent = meter.stop()
    connected = sum(r["connected"] for r in reports)
    wall = max(r["last_done"] for r in reports) - min(r["began"] for r in reports)
    rate = connected / wall if wall > 0 else math.nan
    failed = sum(r["failed"] for r in reports)
    errors = {k: v for r in reports for k, v in r["errors"].items()}
    outcome.check(f"{label}: every connection connected", failed == 0, f"{connected} ok, {failed} {errors}")
    for role in meter_pids:
        outcome.numbers[f"{label} connect CPU µs ({role})"] = spent[role] / max(1, connected) * 1e6
    server_cpu = sum(v for role, v in spent.items() if role in meter_pids)
    gen_cpu = sum(v for role, v in spent.items() if role not in meter_pids)
    outcome.numbers[f"{label} connect CPU µs (server)"] = server_cpu / max(1, connected) * 1e6
    outcome.numbers[f"{label} connect CPU µs (generators)"] = gen_cpu / max(1, connected) * 1e6
    outcome.numbers[f"{label} connect p99 ms"] = max(r["latency_p99"] for r in reports) * 1e3
    return rate


def bursts_for(opts: Options, deliveries_per_burst: int) -> int:
    wanted = math.ceil(opts.deliveries / max(1, deliveries_per_burst))
    return max(opts.min_bursts, min(opts.max_bursts, wanted))


def run_phase(
    target: str,
    rung: tuple[str, int, int],
    per_burst: int,
    fire: Any,
    gens: list[Child],
    pids: dict[str, int],
    opts: Options,
    workdir: Path,
) -> PhaseResult:
    name, subscribers, count = rung
    channels = [name] if count == 1 else [f"{name}-{i}" for i in range(count)]
    spec = orjson.dumps({"channels": channels, "per_burst": per_burst}).decode()
    for gen in gens:
        gen.completed = set()
        gen.tell(f"phase {spec}")
    for gen in gens:
        gen.expect_per_burst = int(gen.next("armed", 30)["expect"])
    busy = [gen for gen in gens if gen.expect_per_burst]
    bursts = bursts_for(opts, subscribers * per_burst)
    starts: dict[int, float] = {}
    meter = CpuMeter(pids | {gen.index: gen.proc.pid for gen in busy})
    slug = re.sub(r"\W+", "-", target).strip("-")
    profile_label = f"{slug}-{name}-{per_burst}"
    with profiled(opts.profile if subscribers >= 10_000 else None, profile_label, pids):
        for burst in range(bursts + 1):  # burst 0 is the warm-up
            if burst == 1:
                meter.start()
            t = time.monotonic()
            starts[burst] = t
            fire(channels, per_burst, t, burst)
            deadline = time.monotonic() + opts.burst_timeout
            for gen in busy:
                gen.wait_burst(burst, deadline)
        spent = meter.stop()
    reports = []
    latencies = array.array("d")
    for gen in gens:
        path = workdir / f"latencies-{gen.index}.bin"
        gen.tell(f"report {path}")
        reports.append(gen.next("report", 60))
        with open(path, "rb") as data:
            raw = data.read()
        chunk = array.array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
    delivered = 0
    span = 0.0
    received_bytes = 0
    for burst in range(1, bursts + 1):
        key = str(burst)
        delivered += sum(int(r["counts"].get(key, 0)) for r in reports)
        last = max((float(r["last"][key]) for r in reports if key in r["last"]), default=starts[burst])
        span += last - starts[burst]
    received_bytes = sum(int(r["bytes"]) for r in reports)
    all_delivered = sum(sum(int(n) for n in r["counts"].values()) for r in reports)
    expected = bursts * sum(gen.expect_per_burst for gen in gens)
    ordered = sorted(latencies)
    return PhaseResult(
        target=target,
        rung=name,
        per_burst=per_burst,
        bursts=bursts,
        deliveries=delivered,
        expected=expected,
        rate=delivered / span if span > 0 else math.nan,
        p50=percentile(ordered, 0.5) * 1e3,
        p99=percentile(ordered, 0.99) * 1e3,
        frame_bytes=received_bytes / max(1, all_delivered),
        per_read=all_delivered / max(1, sum(int(r["reads"]) for r in reports)),
        cpu={role: seconds / max(1, delivered) * 1e6 for role, seconds in spent.items()},
    )


def switchboard_fire(publishers: list[Publisher], pipelined: bool) -> Any:
    """Publish a burst through the server API.

    With ``pipelined`` every request of the burst goes on one keep-alive connection in one write;
    otherwise request ``i`` goes on connection ``i``, all of them written before any answer is read, so
    that they reach the router at once (the router serves a connection's pipelined requests in turn).
    One channel: ``/api/publish``; several: ``/api/broadcast`` to all of them.
    """

    def fire(channels: list[str], per_burst: int, t: float, burst: int) -> None:
        if len(channels) == 1:
            path = "/api/publish"
            bodies = [
                orjson.dumps({"channel": channels[0], "data": {"t": t, "b": burst, "i": i, "p": PAD}})
                for i in range(per_burst)
            ]
        else:
            path = "/api/broadcast"
            bodies = [
                orjson.dumps({"channels": channels, "data": {"t": t, "b": burst, "i": i, "p": PAD}})
                for i in range(per_burst)
            ]
        if pipelined:
            publishers[0].send(path, bodies)
            publishers[0].answers(path, len(bodies))
            return
        for publisher, body in zip(publishers, bodies, strict=False):
            publisher.send(path, [body])
        for publisher, _ in zip(publishers, bodies, strict=False):
            publisher.answers(path, 1)

    return fire


def ceiling_fire(ceiling: Ceiling, coalesce: bool) -> Any:
    def fire(channels: list[str], per_burst: int, t: float, burst: int) -> None:
        ceiling.ask({"channels": channels, "n": per_burst, "coalesce": coalesce, "t": t, "b": burst})

    return fire


# -- the run ---------------------------------------------------------------------------------------------


def run(opts: Options) -> Outcome:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if -(-opts.connections // opts.generators) > MAX_SOCKETS_PER_GENERATOR:
        raise BenchError("more than 10,000 sockets per generator: use more generators")
    if max(subscribers for _, subscribers, _ in opts.rungs) > opts.connections:
        raise BenchError("a rung has more subscribers than connections")
    outcome = Outcome(opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-fanout-"))
    server: ServerProcess | None = None
    ceiling: Ceiling | None = None
    children: list[Child] = []
    try:
        server = start_switchboard(workdir, opts.shards)
        ceiling = Ceiling(workdir)
        with HttpClient(server.port) as client:
            shards = client.api("info", {})["result"]["nodes"][0]["shards"]
        server_pids = {"router": server.router_pid()} | {f"shard-{s['index']}": int(s["pid"]) for s in shards}
        shard_pids = [pid for role, pid in server_pids.items() if role.startswith("shard")]
        ceiling_pids = {"ceiling": ceiling.pid}
        time.sleep(opts.settle)
        sb_before = sum(rss_bytes(pid) for pid in shard_pids)
        ceiling_before = rss_bytes(ceiling.pid)

        sb_gens = start_generators("switchboard", server.port, 1, opts, workdir)
        children += sb_gens
        ceiling_gens = start_generators("ceiling", ceiling.port, 1 + opts.generators, opts, workdir)
        children += ceiling_gens

        ceiling_rate = connect(outcome, "ceiling", ceiling_gens, ceiling_pids, opts)
        sb_rate = connect(outcome, "switchboard", sb_gens, server_pids, opts)
        time.sleep(opts.settle)
        sb_per_conn = (sum(rss_bytes(pid) for pid in shard_pids) - sb_before) / opts.connections
        ceiling_per_conn = (rss_bytes(ceiling.pid) - ceiling_before) / opts.connections
        outcome.add(
            "Switchboard WebSocket connects/s (upgrade + JWT + handoff + connect reply)",
            sb_rate,
            f"{sb_rate:,.0f} /s",
            f"≥ {TARGET_CONNECTS:,}/s",
            sb_rate >= TARGET_CONNECTS,
        )
        outcome.add("ceiling connects/s (upgrade only)", ceiling_rate, f"{ceiling_rate:,.0f} /s")
        outcome.add(
            f"Switchboard shard RSS per idle WebSocket connection ({opts.connections:,})",
            sb_per_conn,
            f"{sb_per_conn / 1024:.2f} KiB",
            "≤ 4 KiB",
            sb_per_conn <= TARGET_RSS,
        )
        outcome.add("ceiling RSS per idle connection", ceiling_per_conn, f"{ceiling_per_conn / 1024:.2f} KiB")
        for label in ("switchboard", "ceiling"):
            server_us = outcome.numbers[f"{label} connect CPU µs (server)"]
            gen_us = outcome.numbers[f"{label} connect CPU µs (generators)"]
            outcome.add(
                f"{label} CPU per connect: server / generators",
                server_us,
                f"{server_us:,.0f} / {gen_us:,.0f} µs",
            )
        split_cpu = ", ".join(
            f"{role} {outcome.numbers[f'switchboard connect CPU µs ({role})']:,.0f}" for role in server_pids
        )
        outcome.add("Switchboard CPU per connect by process", 0.0, f"{split_cpu} µs")
        outcome.add(
            "Switchboard connect latency p99 (worst generator)",
            outcome.numbers["switchboard connect p99 ms"],
            f"{outcome.numbers['switchboard connect p99 ms']:.1f} ms",
        )

        for gen in sb_gens:
            gen.tell("subscribe")
        wanted = replies = 0
        errors: dict[str, int] = {}
        for gen in sb_gens:
            event = gen.next("subscribed", 120)
            wanted += int(event["wanted"])
            replies += int(event["replies"])
            errors.update(event["errors"])
        outcome.check(
            "every subscribe command answered without error",
            replies >= wanted and not errors,
            f"{replies}/{wanted} replies, errors {errors}",
        )
        time.sleep(opts.settle)

        with contextlib.ExitStack() as stack:
            publishers = [stack.enter_context(Publisher(server.port, timeout=30)) for _ in range(10)]
            sb = switchboard_fire(publishers, pipelined=False)
            sb_pipelined = switchboard_fire(publishers, pipelined=True)
            uncoalesced = ceiling_fire(ceiling, coalesce=False)
            coalesced = ceiling_fire(ceiling, coalesce=True)
            for rung in opts.rungs:
                plan = [
                    ("ceiling", 1, uncoalesced, ceiling_gens, ceiling_pids),
                    ("switchboard", 1, sb, sb_gens, server_pids),
                    ("ceiling (1 write per frame)", 10, uncoalesced, ceiling_gens, ceiling_pids),
                    ("ceiling", 10, coalesced, ceiling_gens, ceiling_pids),
                    ("switchboard", 10, sb, sb_gens, server_pids),
                    ("switchboard (pipelined)", 10, sb_pipelined, sb_gens, server_pids),
                ]
                for target, per_burst, fire, gens, pids in plan:
                    result = run_phase(target, rung, per_burst, fire, gens, pids, opts, workdir)
                    outcome.phases.append(result)
                    print(describe(result), file=sys.stderr, flush=True)

        lost = [p for p in outcome.phases if p.deliveries != p.expected]
        outcome.check(
            "every publication reached every subscriber",
            not lost,
            ", ".join(f"{p.target} {p.rung} {p.per_burst}/burst: {p.deliveries}/{p.expected}" for p in lost)
            or "all delivered",
        )
        ended = {child.index: child.stop() for child in children}
        outcome.check(
            "no connection ended before the generators closed it", not any(ended.values()), str(ended)
        )
    finally:
        for child in children:
            if child.proc.poll() is None:
                child.stop(timeout=5)
        if ceiling is not None:
            ceiling.stop()
        if server is not None:
            server.stop()
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return outcome


# -- reporting -------------------------------------------------------------------------------------------


def describe(p: PhaseResult) -> str:
    return (
        f"{p.target:28} {p.rung:5} {p.per_burst:2}/burst: {p.rate:12,.0f} deliveries/s  "
        f"p50 {p.p50:8.2f} ms  p99 {p.p99:8.2f} ms  ({p.deliveries}/{p.expected} in {p.bursts} bursts)"
    )


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |"]
    line.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    line += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(line)


def rung_label(opts: Options, name: str) -> str:
    for rung, subscribers, channels in opts.rungs:
        if rung == name:
            if channels == 1:
                return f"{subscribers:,} subs, 1 channel"
            return f"{subscribers:,} subs, {channels} channels"
    return name


def find(outcome: Outcome, target: str, rung: str, per_burst: int) -> PhaseResult | None:
    for p in outcome.phases:
        if p.target == target and p.rung == rung and p.per_burst == per_burst:
            return p
    return None


def verdict(passed: bool) -> str:
    return "ok" if passed else "MISSED"


def ladder_table(outcome: Outcome) -> str:
    rows: list[tuple[str, ...]] = []
    for name, _, _ in outcome.options.rungs:
        for per_burst in (1, 10):
            sb = find(outcome, "switchboard", name, per_burst)
            base = find(outcome, "ceiling", name, per_burst)
            if sb is None or base is None:
                continue
            ratio = sb.rate / base.rate if base.rate else math.nan
            target = TARGET_RATIO_ONE if per_burst == 1 else TARGET_RATIO_TEN
            p99_ratio = sb.p99 / base.p99 if base.p99 else math.nan
            single = find(outcome, "ceiling (1 write per frame)", name, per_burst)
            piped = find(outcome, "switchboard (pipelined)", name, per_burst)
            rows.append(
                (
                    rung_label(outcome.options, name),
                    f"{per_burst}",
                    f"{base.rate:,.0f}",
                    f"{single.rate:,.0f}" if single else "",
                    f"{sb.rate:,.0f}",
                    f"{ratio:.2f} (≥ {target}) {verdict(ratio >= target)}",
                    f"{base.p50:.2f} / {base.p99:.2f}",
                    f"{sb.p50:.2f} / {sb.p99:.2f}",
                    f"{piped.rate:,.0f}; {piped.p50:.2f} / {piped.p99:.2f}" if piped else "",
                    f"{p99_ratio:.2f} (≤ {TARGET_P99_FACTOR}) {verdict(p99_ratio <= TARGET_P99_FACTOR)}",
                )
            )
    header = (
        "rung",
        "pubs/burst",
        "ceiling deliveries/s",
        "ceiling, 1 write/frame",
        "Switchboard deliveries/s",
        "Switchboard / ceiling",
        "ceiling p50 / p99 ms",
        "Switchboard p50 / p99 ms",
        "Switchboard, pipelined on 1 connection: deliveries/s; p50 / p99 ms",
        "p99 ratio",
    )
    return markdown_table(header, rows)


def cpu_table(outcome: Outcome) -> str:
    rows: list[tuple[str, ...]] = []
    for p in outcome.phases:
        if p.rung != outcome.options.rungs[-2][0] and p.rung != outcome.options.rungs[-1][0]:
            continue
        server = sum(
            v for role, v in p.cpu.items() if not role.startswith(("switchboard-gen", "ceiling-gen"))
        )
        gens = sum(v for role, v in p.cpu.items() if role.startswith(("switchboard-gen", "ceiling-gen")))
        parts = ", ".join(
            f"{role} {v:.1f}"
            for role, v in p.cpu.items()
            if not role.startswith(("switchboard-", "ceiling-"))
        )
        relative = ""
        if p.target.startswith("switchboard"):
            base = find(outcome, "ceiling", p.rung, p.per_burst)
            if base is not None and server:
                base_server = sum(v for role, v in base.cpu.items() if role == "ceiling")
                relative = f"{base_server / server:.2f}"
        rows.append(
            (
                rung_label(outcome.options, p.rung),
                str(p.per_burst),
                p.target,
                f"{server:.2f} ({parts})",
                relative,
                f"{gens:.2f}",
                f"{p.per_read:.1f}",
                f"{p.frame_bytes:.0f}",
            )
        )
    header = (
        "rung",
        "pubs/burst",
        "server",
        "server CPU µs/delivery",
        "ceiling CPU / server CPU",
        "generators CPU µs/delivery",
        "deliveries per read",
        "B/delivery",
    )
    return markdown_table(header, rows)


def command_line(opts: Options) -> str:
    if opts.quick:
        return ".venv/bin/python -m bench.fanout_bench --quick"
    return (
        ".venv/bin/python -m bench.fanout_bench "
        f"--connections {opts.connections} --shards {opts.shards} --generators {opts.generators}"
    )


def report(outcome: Outcome) -> str:
    opts = outcome.options
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = markdown_table(("metric", "value", "target", ""), outcome.summary)
    checks = [f"- check {'ok' if ok else 'FAILED'}: {name} ({detail})" for name, ok, detail in outcome.checks]
    return "\n".join(
        [
            f"### WebSocket fan-out, {when}, commit {git_commit()}",
            "",
            f"- machine: {machine()}; the load generators, the ceiling and Switchboard share the 2 cores",
            f"- command: `{command_line(opts)}`",
            f"- shape: {opts.connections:,} WebSocket (JSON) connections to each server, "
            f"{opts.shards} shards, {opts.generators} trio generator processes per server; "
            f"about {opts.deliveries:,} deliveries "
            f"per phase ({opts.min_bursts} to {opts.max_bursts} bursts, plus one warm-up burst)",
            "",
            summary,
            "",
            ladder_table(outcome),
            "",
            "CPU per delivery (µs, all processes of the phase, from /proc/<pid>/stat) at the largest rungs:",
            "",
            cpu_table(outcome),
            "",
            *checks,
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="WebSocket connections per server")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--generators", type=int, default=2, help="generator processes per server")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight per generator")
    parser.add_argument("--deliveries", type=int, default=200_000, help="deliveries per phase, roughly")
    parser.add_argument("--quick", action="store_true", help="1,000 connections, a short ladder")
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log)")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profiles of the 10k phases here")
    args = parser.parse_args(argv)
    opts = quick_options() if args.quick else Options()
    if not args.quick:
        opts.connections = args.connections
        opts.shards = args.shards
        opts.generators = args.generators
        opts.concurrency = args.concurrency
        opts.deliveries = args.deliveries
        opts.rungs = [r for r in FULL_RUNGS if r[1] <= args.connections]
    opts.append_results = Path(args.append_results) if args.append_results else None
    opts.keep = args.keep
    opts.profile = args.profile
    return opts


def quick_options() -> Options:
    return Options(
        connections=1_000,
        generators=1,
        concurrency=100,
        rungs=list(QUICK_RUNGS),
        deliveries=10_000,
        min_bursts=3,
        max_bursts=50,
        settle=0.5,
        quick=True,
    )


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
