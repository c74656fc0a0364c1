"""The whole-system scale ladder: Switchboard, Node.js ``ws`` and the bare uvloop ceiling, rung by rung.

For each rung (1k → 10k → 100k → 500k connections by default) the three servers take turns on the same
machine, one at a time, with the same trio generators (:mod:`bench.ws_loadgen`, at most 18,000 sockets
each, one source network ``127.<g>.x.y`` per generator):

* **Switchboard**: ``python -m broker`` with ``ceil(C / 17,000)`` shards (at least 2; the open-file limit is
  20,000 per process). Every connection upgrades at ``/connection/websocket``, sends ``connect`` with its
  own HS256 token, then ``subscribe`` (channel ``idle-<k % 1000>``; the first 10,000 also ``fan``).
* **Node.js ``ws``** (``bench/node_ws/server.js``) and **the ceiling** (:mod:`bench.ceiling_server`):
  ``ceil(C / 18,000)`` processes of each, generator ``g`` talking to process ``g``; the channels are named
  in the upgrade's query string, so that a connect is the upgrade alone.

Measured per server and rung:

1. **connects/s** (connections / time from the first connect to the last), and **server CPU per connect
   (+ subscribe)** from ``/proc/<pid>/stat`` of every server process;
2. **memory per connection**: growth of the summed PSS (``/proc/<pid>/smaps_rollup``; shared memory is
   counted once) of the server's processes, and its **fixed memory per process** before any connection;
3. **idle CPU while holding** them: Switchboard for ``--intervals`` ping intervals (the generators answer
   every ping; none may be lost), the others for ``--idle-hold`` seconds (they send no pings);
4. **fan-out** to the 10,000 subscribers of ``fan`` (fewer on smaller rungs) while the rest are held:
   K=1 (one publication per burst) and K=10 (ten: Switchboard gets ten ``publish`` requests pipelined on one
   connection; the ceiling writes them one write per frame and coalesced into one write; Node one
   ``ws.send`` each): deliveries/s and latency p50 / p99;
5. Switchboard only: ``connections`` by user against a bare ``/health`` on the same connection (p50 /
   p99; every answer must list exactly the user's one connection), and two CEL scans that match nothing:
   ``user.endsWith("-none")`` (no index can help) and ``app_name == "none"`` (an index hint).

The report is one table per metric, rows by rung, with Switchboard's ratio to the ceiling and to Node,
and a PNG per metric in ``bench/plots/`` (matplotlib). Every wait has a timeout; only processes the run
started are signalled, by pid. Exit status 0 when every correctness check passed, 1 when one failed, 2 when
the run could not complete.

    make bench-scale                                          # npm's ws, matplotlib, then the full ladder
    .venv/bin/python -m bench.scale_ladder --rungs 1000,10000 # a short one
    .venv/bin/python -m bench.scale_ladder --quick            # 1,000 and 3,000 connections, short holds
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.connections_bench import (
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
    timed,
)
from bench.fanout_bench import Ceiling, Child, Publisher, ceiling_fire, run_phase, switchboard_fire
from bench.loadgen import percentile
from bench.profiling import profiled

FULL_RUNGS = [1_000, 10_000, 100_000, 500_000]
QUICK_RUNGS = [1_000, 3_000]
PER_PROCESS = 18_000  # sockets per generator and per ceiling / Node process (open files: 20,000)
PER_SHARD = 17_000  # connections per shard, with room for the hash's unevenness
FAN = "fan"
FAN_SUBSCRIBERS = 10_000
IDLE_CHANNELS = 1_000
TARGETS = ("ceiling", "node", "switchboard")
NODE_DIR = ROOT / "bench" / "node_ws"
EMPTY_UNHINTED = 'user.endsWith("-none")'
EMPTY_HINTED = 'app_name == "none"'


@dataclass
class Options:
    rungs: list[int] = field(default_factory=lambda: list(FULL_RUNGS))
    targets: tuple[str, ...] = TARGETS
    ping_interval: int = 25
    intervals: int = 3
    idle_hold: float = 10.0
    in_flight: int = 600  # connects being set up at once, over all generators
    bursts: int = 20
    by_user_requests: int = 1_000
    scans: int = 10
    settle: float = 2.0
    plots: Path | None = ROOT / "bench" / "plots"
    profile: Path | None = None
    append_results: Path | None = None
    keep: bool = False


@dataclass
class FanoutSettings:
    """What :func:`bench.fanout_bench.run_phase` reads from its options."""

    deliveries: int
    min_bursts: int
    max_bursts: int
    burst_timeout: float = 15.0
    profile: Path | None = None


@dataclass
class Outcome:
    options: Options
    numbers: dict[tuple[int, str, str], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    began: str = ""

    def put(self, rung: int, target: str, metric: str, value: float) -> None:
        self.numbers[(rung, target, metric)] = value

    def get(self, rung: int, target: str, metric: str) -> float:
        return self.numbers.get((rung, target, metric), math.nan)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)


# -- memory ----------------------------------------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    """Proportional set size: a process's resident pages, each shared one divided among its users."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no Pss for pid {pid}")


def tree_pss(pids: dict[str, int]) -> int:
    return sum(pss_bytes(pid) for pid in pids.values())


# -- the servers -----------------------------------------------------------------------------------------


class Fleet:
    """One server under test: its processes, the port each generator uses, and how to fan out."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pids: dict[str, int] = {}
        self.ports: list[int] = []
        self.fire_one: Callable[..., None] | None = None
        self.fire_ten: dict[str, Callable[..., None]] = {}
        self._stops: list[Callable[[], object]] = []

    def port_for(self, generator: int) -> int:
        return self.ports[generator % len(self.ports)]

    def stop(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(BenchError, OSError):
                stop()


def start_peers(kind: str, processes: int, workdir: Path) -> Fleet:
    """``processes`` ceiling or Node servers, each on its own port."""
    fleet = Fleet(kind)
    for i in range(processes):
        if kind == "node":
            server = Ceiling(workdir, f"node-{i}", [str(NODE_DIR / "server.js")], ["node"])
        else:
            server = Ceiling(workdir, f"ceiling-{i}")
        fleet._stops.append(server.stop)
        fleet.pids[f"{kind}-{i}"] = server.pid
        fleet.ports.append(server.port)
        if i == 0:  # the fan channel's subscribers are all on generator 0, so on process 0
            fleet.fire_one = ceiling_fire(server, coalesce=False)
            if kind == "node":
                fleet.fire_ten = {"node": fleet.fire_one}
            else:
                fleet.fire_ten = {
                    "ceiling, coalesced": ceiling_fire(server, coalesce=True),
                    "ceiling, 1 write per frame": fleet.fire_one,
                }
    return fleet


def start_switchboard(connections: int, opts: Options, workdir: Path) -> tuple[Fleet, ServerProcess]:
    shards = max(2, math.ceil(connections / PER_SHARD))
    server = ServerProcess(
        workdir,
        shards,
        {
            "allow_subscribe_for_client": True,
            "ping_interval": f"{opts.ping_interval}s",
            "pong_timeout": f"{max(1, opts.ping_interval * 2 // 3)}s",
        },
    )
    fleet = Fleet("switchboard")
    fleet._stops.append(server.stop)
    server.start(timeout=60 + shards * 3)
    with HttpClient(server.port, timeout=60) as client:
        deadline = time.monotonic() + 60
        while True:
            listed = client.api("info", {})["result"]["nodes"][0]["shards"]
            if len(listed) == shards or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    if len(listed) != shards:
        raise BenchError(f"{len(listed)} of {shards} shards answered")
    fleet.pids = {"supervisor": server.pid, "router": server.router_pid()}
    fleet.pids |= {f"shard-{s['index']}": int(s["pid"]) for s in listed}
    fleet.ports = [server.port]
    return fleet, server


def arm_publisher(fleet: Fleet) -> None:
    """A keep-alive API connection opened just before the fan-out (an idle one is closed by the router)."""
    publisher = Publisher(fleet.ports[0], timeout=60)
    fleet._stops.append(publisher.sock.close)
    fleet.fire_one = switchboard_fire([publisher], pipelined=True)
    fleet.fire_ten = {"switchboard": fleet.fire_one}


def start_generators(kind: str, fleet: Fleet, connections: int, opts: Options, workdir: Path) -> list[Child]:
    fan = min(connections, FAN_SUBSCRIBERS)
    rungs = orjson.dumps([[FAN, fan, 1], ["idle", connections, IDLE_CHANNELS]]).decode()
    parts = max(1, math.ceil(connections / PER_PROCESS))
    concurrency = max(20, opts.in_flight // parts)
    setup_timeout = 120 + connections / 300  # the whole rung connects at ≥ 300/s, or it is reported as failed
    generators = []
    target = "switchboard" if kind == "switchboard" else "ceiling"
    for g, (start, count) in enumerate(split(connections, parts)):
        args = ["bench.ws_loadgen", "--target", target, "--port", str(fleet.port_for(g)), "--secret", SECRET]
        args += ["--start", str(start), "--count", str(count), "--net", str(g + 1)]
        args += ["--concurrency", str(concurrency), "--rungs", rungs, "--hold-timeout", "3600"]
        args += ["--connect-timeout", "60", "--setup-timeout", str(setup_timeout)]
        generators.append(Child(f"{kind}-{connections}-gen{g}", args, workdir))
    for gen in generators:
        gen.next("ready", 120)
    return generators


# -- one server at one rung ------------------------------------------------------------------------------


def measure(kind: str, connections: int, opts: Options, outcome: Outcome, workdir: Path) -> None:
    label = f"{kind} at {connections:,}"
    server: ServerProcess | None = None
    if kind == "switchboard":
        fleet, server = start_switchboard(connections, opts, workdir)
    else:
        fleet = start_peers(kind, max(1, math.ceil(connections / PER_PROCESS)), workdir)
    generators: list[Child] = []
    put = lambda metric, value: outcome.put(connections, kind, metric, value)  # noqa: E731
    try:
        time.sleep(opts.settle)
        before = tree_pss(fleet.pids)
        roles_before = {role: pss_bytes(pid) for role, pid in fleet.pids.items()}
        put("fixed memory per process (MiB)", before / len(fleet.pids) / 2**20)
        if kind == "switchboard":
            shard_pss = [pss_bytes(pid) for role, pid in fleet.pids.items() if role.startswith("shard")]
            put("fixed memory per shard (MiB)", sum(shard_pss) / len(shard_pss) / 2**20)
            shard_rss = [rss_bytes(pid) for role, pid in fleet.pids.items() if role.startswith("shard")]
            put("fixed RSS per shard (MiB)", sum(shard_rss) / len(shard_rss) / 2**20)
        generators = start_generators(kind, fleet, connections, opts, workdir)
        with profiled(opts.profile, f"setup-{kind}-{connections}", fleet.pids):
            connected = set_up(kind, label, connections, fleet, generators, outcome)
        time.sleep(opts.settle)
        after = tree_pss(fleet.pids)
        put("memory per connection (KiB)", (after - before) / max(1, connected) / 1024)
        if kind == "switchboard":
            grown = {role: pss_bytes(pid) - roles_before[role] for role, pid in fleet.pids.items()}
            shards = sum(v for role, v in grown.items() if role.startswith("shard"))
            put("router memory per connection (KiB)", grown["router"] / max(1, connected) / 1024)
            put("shards' memory per connection (KiB)", shards / max(1, connected) / 1024)
            shm = sum(
                rss_bytes(pid, "RssShmem") for role, pid in fleet.pids.items() if role.startswith("shard")
            )
            put("shards' shared memory per connection (KiB)", shm / max(1, connected) / 1024)
        put("memory of the whole server (MiB)", after / 2**20)
        seconds = opts.intervals * opts.ping_interval + 2 if kind == "switchboard" else opts.idle_hold
        with profiled(opts.profile, f"hold-{kind}-{connections}", fleet.pids):
            hold(kind, label, connections, fleet, generators, outcome, seconds)
        fan_out(kind, connections, fleet, generators, opts, outcome, workdir)
        if server is not None:
            with HttpClient(server.port, timeout=120) as client:
                by_user(label, connections, client, opts, outcome)
                scans(label, connections, client, opts, outcome)
                clients = client.api("info", {})["result"]["nodes"][0]["num_clients"]
                outcome.check(f"{label}: info counts every connection", clients == connected, f"{clients:,}")
        finals = [gen_report(gen, workdir) for gen in generators]
        lost = sum(int(r["ended_early"]) for r in finals)
        endings: dict[str, int] = {}
        for r in finals:
            for ending, count in r["endings"].items():
                endings[ending] = endings.get(ending, 0) + int(count)
        outcome.check(f"{label}: no connection ended by the server", lost == 0, f"{lost} {endings or ''}")
        if kind == "switchboard":
            pings = sum(int(r["pings"]) for r in finals)
            per_connection = pings / max(1, connected)
            put("pings answered per connection", per_connection)
            outcome.check(
                f"{label}: at least {opts.intervals} pings per connection on average",
                per_connection >= opts.intervals,
                f"{per_connection:.2f}",
            )
    finally:
        for gen in generators:
            with contextlib.suppress(BenchError):
                gen.stop(timeout=60)
        fleet.stop()


def set_up(
    kind: str, label: str, connections: int, fleet: Fleet, generators: list[Child], outcome: Outcome
) -> int:
    meter = CpuMeter(fleet.pids)
    meter.start()
    began = time.monotonic()
    for gen in generators:
        gen.tell("go")
    wait = 300 + connections / 200
    reports = [gen.next("connected", wait) for gen in generators]
    connected = sum(int(r["connected"]) for r in reports)
    errors = {k: v for r in reports for k, v in r["errors"].items()}
    outcome.check(f"{label}: every connection connected", connected == connections, f"{connected:,} {errors}")
    wall = max(r["last_done"] for r in reports) - min(r["began"] for r in reports)
    outcome.put(connections, kind, "connects/s", connected / wall if wall > 0 else math.nan)
    outcome.put(connections, kind, "connect latency p99 (ms)", max(r["latency_p99"] for r in reports) * 1e3)
    if kind == "switchboard":
        for gen in generators:
            gen.tell("subscribe")
        subscribed = [gen.next("subscribed", wait) for gen in generators]
        replies = sum(int(s["replies"]) for s in subscribed)
        wanted = sum(int(s["wanted"]) for s in subscribed)
        sub_errors = {k: v for s in subscribed for k, v in s["errors"].items()}
        outcome.check(
            f"{label}: every subscribe answered without error",
            replies == wanted and not sub_errors,
            f"{replies:,}/{wanted:,} {sub_errors}",
        )
    spent = meter.stop()
    outcome.put(connections, kind, "set-up time (s)", time.monotonic() - began)
    per = 1e6 / max(1, connected)
    outcome.put(connections, kind, "server CPU per connect + subscribe (µs)", sum(spent.values()) * per)
    if kind == "switchboard":
        outcome.put(connections, kind, "router CPU per connect + subscribe (µs)", spent["router"] * per)
        shards = sum(v for role, v in spent.items() if role.startswith("shard"))
        outcome.put(connections, kind, "shards' CPU per connect + subscribe (µs)", shards * per)
    return connected


def hold(
    kind: str,
    label: str,
    connections: int,
    fleet: Fleet,
    generators: list[Child],
    outcome: Outcome,
    seconds: float,
) -> None:
    meter = CpuMeter(fleet.pids)
    meter.start()
    began = time.monotonic()
    deadline = began + seconds
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        for gen in generators:
            if gen.proc.poll() is not None:
                raise BenchError(f"{label}: generator {gen.index} exited during the hold")
    held = time.monotonic() - began
    spent = meter.stop()
    outcome.put(connections, kind, "idle CPU while holding (% of a core)", sum(spent.values()) / held * 100)


def fan_out(
    kind: str,
    connections: int,
    fleet: Fleet,
    generators: list[Child],
    opts: Options,
    outcome: Outcome,
    workdir: Path,
) -> None:
    subscribers = min(connections, FAN_SUBSCRIBERS)
    if kind == "switchboard":
        arm_publisher(fleet)
    rung = (FAN, subscribers, 1)
    settings = FanoutSettings(
        deliveries=opts.bursts * subscribers, min_bursts=opts.bursts, max_bursts=opts.bursts
    )
    assert fleet.fire_one is not None
    one = run_phase(kind, rung, 1, fleet.fire_one, generators, fleet.pids, settings, workdir)  # type: ignore[arg-type]
    outcome.put(connections, kind, "fan-out K=1 (deliveries/s)", one.rate)
    outcome.put(connections, kind, "fan-out K=1 p50 (ms)", one.p50)
    outcome.put(connections, kind, "fan-out K=1 p99 (ms)", one.p99)
    outcome.check(
        f"{kind} at {connections:,}: fan-out K=1 delivered everything",
        one.deliveries == one.expected,
        f"{one.deliveries:,} of {one.expected:,}",
    )
    settings.deliveries = settings.deliveries * 10
    for variant, fire in fleet.fire_ten.items():
        ten = run_phase(variant, rung, 10, fire, generators, fleet.pids, settings, workdir)  # type: ignore[arg-type]
        outcome.put(connections, variant, "fan-out K=10 (deliveries/s)", ten.rate)
        outcome.put(connections, variant, "fan-out K=10 p99 (ms)", ten.p99)
        outcome.check(
            f"{variant} at {connections:,}: fan-out K=10 delivered everything",
            ten.deliveries == ten.expected,
            f"{ten.deliveries:,} of {ten.expected:,}",
        )


def by_user(label: str, connections: int, client: HttpClient, opts: Options, outcome: Outcome) -> None:
    chooser = random.Random(13)
    health: list[float] = []
    users: list[float] = []
    wrong = 0
    for i in range(opts.by_user_requests + 50):
        k = chooser.randrange(connections)
        elapsed_health, _ = timed(client, "GET", "/health")
        elapsed, payload = timed(client, "POST", "/api/connections", orjson.dumps({"user": f"u{k}"}))
        if i < 50:
            continue  # warm-up
        health.append(elapsed_health)
        users.append(elapsed)
        found = orjson.loads(payload).get("result", {}).get("connections", {})
        if len(found) != 1 or next(iter(found.values())).get("user") != f"u{k}":
            wrong += 1
    health.sort()
    users.sort()
    for name, samples in (("/health", health), ("by user", users)):
        outcome.put(connections, "switchboard", f"{name} p50 (ms)", percentile(samples, 0.5) * 1e3)
        outcome.put(connections, "switchboard", f"{name} p99 (ms)", percentile(samples, 0.99) * 1e3)
    outcome.check(f"{label}: every by-user answer is the user's one connection", wrong == 0, f"{wrong} wrong")


def scans(label: str, connections: int, client: HttpClient, opts: Options, outcome: Outcome) -> None:
    for name, expression in (("CEL, no index", EMPTY_UNHINTED), ("CEL, index hint", EMPTY_HINTED)):
        samples = []
        found = 0
        for i in range(opts.scans + 2):
            body = orjson.dumps({"user": "", "expression": expression})
            elapsed, payload = timed(client, "POST", "/api/connections", body)
            result = orjson.loads(payload).get("result", {})
            found += len(result.get("connections", {})) + len(result.get("unavailable_shards", []))
            if i >= 2:  # warm-up: every shard builds its parser and compiles the expression
                samples.append(elapsed)
        samples.sort()
        outcome.put(
            connections, "switchboard", f"{name}, nothing matches, p50 (ms)", percentile(samples, 0.5) * 1e3
        )
        outcome.check(
            f"{label}: `{expression}` matches nothing, every shard answered", found == 0, f"{found}"
        )


def gen_report(gen: Child, workdir: Path) -> dict[str, Any]:
    gen.tell(f"report {workdir / f'{gen.index}-final.bin'}")
    answer: dict[str, Any] = gen.next("report", 120)
    return answer


# -- the run ---------------------------------------------------------------------------------------------


def run(opts: Options) -> Outcome:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every server process
    if "node" in opts.targets and not (NODE_DIR / "node_modules" / "ws").is_dir():
        raise BenchError(f"Node's ws is not installed: run `npm ci` in {NODE_DIR} (make bench-scale does)")
    outcome = Outcome(opts, began=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    try:
        _climb(opts, outcome)
    except KeyboardInterrupt:  # what was measured so far is still reported
        outcome.check("the ladder ran to the end", False, "interrupted")
    if opts.plots is not None:
        from bench.scale_plots import plot_all

        written = plot_all(outcome, opts.plots)
        outcome.notes.append(f"plots: {', '.join(str(p.relative_to(ROOT)) for p in written)}")
    return outcome


def _climb(opts: Options, outcome: Outcome) -> None:
    for connections in opts.rungs:
        for kind in opts.targets:
            workdir = Path(tempfile.mkdtemp(prefix=f"switchboard-ladder-{kind}-"))
            print(f"{time.strftime('%H:%M:%S')} {kind} at {connections:,} connections", file=sys.stderr)
            try:
                measure(kind, connections, opts, outcome, workdir)
            except (BenchError, OSError) as exc:  # the other rungs and servers still run; the check fails
                outcome.check(f"{kind} at {connections:,}: the rung completed", False, str(exc)[:300])
            finally:
                if opts.keep:
                    print(f"kept {workdir}", file=sys.stderr)
                else:
                    shutil.rmtree(workdir, ignore_errors=True)


# -- the report ------------------------------------------------------------------------------------------

# (metric, unit shown, which way is better: +1 higher, -1 lower)
SHARED_METRICS = [
    ("connects/s", "/s", +1),
    ("server CPU per connect + subscribe (µs)", "µs", -1),
    ("memory per connection (KiB)", "KiB", -1),
    ("fixed memory per process (MiB)", "MiB", -1),
    ("idle CPU while holding (% of a core)", "%", -1),
    ("fan-out K=1 (deliveries/s)", "/s", +1),
    ("fan-out K=1 p50 (ms)", "ms", -1),
    ("fan-out K=1 p99 (ms)", "ms", -1),
]
SWITCHBOARD_METRICS = [
    "router CPU per connect + subscribe (µs)",
    "shards' CPU per connect + subscribe (µs)",
    "router memory per connection (KiB)",
    "shards' memory per connection (KiB)",
    "shards' shared memory per connection (KiB)",
    "fixed memory per shard (MiB)",
    "fixed RSS per shard (MiB)",
    "memory of the whole server (MiB)",
    "set-up time (s)",
    "pings answered per connection",
    "/health p50 (ms)",
    "by user p50 (ms)",
    "/health p99 (ms)",
    "by user p99 (ms)",
    "CEL, no index, nothing matches, p50 (ms)",
    "CEL, index hint, nothing matches, p50 (ms)",
]


def shown(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}×"  # noqa: RUF001


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(outcome: Outcome) -> str:
    opts = outcome.options
    get = outcome.get
    out = [
        f"### Scale ladder, {outcome.began}, commit {git_commit()}",
        "",
        f"- machine: {machine()}; the generators share the cores with the server under test",
        f"- command: `{command_line(opts)}`",
        f"- ping interval {opts.ping_interval} s, held {opts.intervals} intervals; "
        f"fan-out to {FAN_SUBSCRIBERS:,} subscribers (or all, below that), {opts.bursts} bursts per phase",
        "",
    ]
    header = ["connections", "switchboard", "node ws", "ceiling", "÷ node", "÷ ceiling"]
    for metric, _, _ in SHARED_METRICS:
        rows = []
        for c in opts.rungs:
            s, n, ce = get(c, "switchboard", metric), get(c, "node", metric), get(c, "ceiling", metric)
            rows.append([f"{c:,}", shown(s), shown(n), shown(ce), ratio(s, n), ratio(s, ce)])
        out += [f"**{metric}**", "", table(header, rows), ""]
    rows = []
    for c in opts.rungs:
        s = get(c, "switchboard", "fan-out K=10 (deliveries/s)")
        n = get(c, "node", "fan-out K=10 (deliveries/s)")
        coalesced = get(c, "ceiling, coalesced", "fan-out K=10 (deliveries/s)")
        single = get(c, "ceiling, 1 write per frame", "fan-out K=10 (deliveries/s)")
        rows.append(
            [f"{c:,}", shown(s), shown(n), shown(coalesced), shown(single), ratio(s, n), ratio(s, coalesced)]
        )
    out += [
        "**fan-out K=10 (deliveries/s)**",
        "",
        table(
            [
                "connections",
                "switchboard",
                "node ws",
                "ceiling coalesced",
                "ceiling 1 write/frame",
                "÷ node",
                "÷ coalesced",
            ],
            rows,
        ),
        "",
    ]
    rows = [
        [metric] + [shown(get(c, "switchboard", metric)) for c in opts.rungs]
        for metric in SWITCHBOARD_METRICS
    ]
    ratios = []
    for c in opts.rungs:
        ratios.append(
            ratio(get(c, "switchboard", "by user p50 (ms)"), get(c, "switchboard", "/health p50 (ms)"))
            + " / "
            + ratio(get(c, "switchboard", "by user p99 (ms)"), get(c, "switchboard", "/health p99 (ms)"))
        )
    rows.append(["by user ÷ /health, p50 / p99", *ratios])
    out += ["**Switchboard only**", "", table(["metric"] + [f"{c:,}" for c in opts.rungs], rows), ""]
    out += [f"- {note}" for note in outcome.notes]
    out += ["", "Checks:", ""]
    out += [f"- {'ok' if passed else 'FAILED'}: {name} ({detail})" for name, passed, detail in outcome.checks]
    return "\n".join(out) + "\n"


def command_line(opts: Options) -> str:
    parts = [".venv/bin/python -m bench.scale_ladder"]
    if opts.rungs != FULL_RUNGS:
        parts.append("--rungs " + ",".join(str(c) for c in opts.rungs))
    if opts.targets != TARGETS:
        parts.append("--targets " + ",".join(opts.targets))
    if opts.ping_interval != 25:
        parts.append(f"--ping-interval {opts.ping_interval}")
    return " ".join(parts)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rungs", default=",".join(str(c) for c in FULL_RUNGS), help="connections per rung")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help="servers to measure, of " + ",".join(TARGETS)
    )
    parser.add_argument("--ping-interval", type=int, default=25, help="Switchboard's ping interval, seconds")
    parser.add_argument(
        "--intervals", type=int, default=3, help="ping intervals to hold Switchboard's connections"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 and 3,000 connections, 5 s pings")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--append-results", nargs="?", const=ROOT / "bench" / "RESULTS.md", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the working directories (logs)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy profiles of the set-up phase into this directory"
    )
    args = parser.parse_args(argv)
    opts = Options(ping_interval=args.ping_interval, intervals=args.intervals)
    opts.rungs = [int(c) for c in args.rungs.split(",") if c]
    opts.targets = tuple(t for t in args.targets.split(",") if t)
    if unknown := set(opts.targets) - set(TARGETS):
        parser.error(f"unknown targets: {sorted(unknown)}")
    if args.quick:
        opts.rungs, opts.ping_interval, opts.idle_hold, opts.bursts = list(QUICK_RUNGS), 5, 3.0, 5
        opts.by_user_requests, opts.scans, opts.settle = 200, 5, 1.0
    if args.no_plots:
        opts.plots = None
    if any(c < 1 or c > 1_000_000 for c in opts.rungs):
        parser.error("every rung must be 1 .. 1,000,000 connections")
    opts.append_results = args.append_results
    opts.keep = args.keep
    opts.profile = args.profile
    return opts


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
