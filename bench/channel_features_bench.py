"""Whole-server benchmark of channel features: presence and ``channels``, recovery, publishing with history.

One run, in this order:

1. **Presence and channels, with and without the shared-memory index.** Two servers start side by side
   (2 shards each): one with ``shm_index: true``, one with ``shm_index: false``. To each, G WebSocket load
   generators (:mod:`bench.ws_loadgen`) open C connections that subscribe over K channels of a namespace
   with ``presence`` (connection ``k`` joins ``room:c-<k % K>``; 10,000 over 1,000 gives 10 subscribers a
   channel). Users are ``u<k>`` and sit on shard ``crc32(user) % N``, so a channel's ten subscribers are
   almost always on both shards. Then one keep-alive HTTP connection per server sends R rounds of sequential
   requests; every round sends each case to both servers, and the server that goes first alternates:
   ``GET /health`` (the bare HTTP cost), ``presence_stats`` and ``presence`` of a random occupied channel,
   ``presence_stats`` of a channel nobody is subscribed to (the index answers it without asking a shard),
   ``presence_stats`` of a channel whose subscribers all sit on one shard (when the placement gives one),
   and ``channels`` (all channels, and a glob matching 11). Every answer is checked.
2. **Recovery.** A third server (2 shards, a history namespace). One process
   (:mod:`bench.recovery_loadgen`) connects M WebSocket clients that subscribe with ``recoverable: true``
   to one channel; they all drop their sockets; P publications go through ``/api/publish``; then every
   client reconnects at the same moment and subscribes with ``recover: true`` and its offset and epoch.
   A client is caught up when it holds all P publications after its offset without gaps. Reported: the
   time from the reconnect signal until the last client is caught up, and the per-client p50/p99 of that
   time. Repeated for a few rounds.
3. **Publish throughput with history on and off**, on the same server: ``/api/publish`` to a channel of a
   namespace with history (``hist:``) and of one without (``plain:``), with no subscribers and with S
   WebSocket subscribers (one generator), in two shapes: W keep-alive connections with one request in
   flight each, and one connection with D pipelined requests in flight. Publications/s is N over the time
   from the first request to the last answer; latency is per request. With subscribers, every delivery is
   counted and its latency (publish time to receipt) recorded. With history, the offsets returned must be
   N distinct consecutive numbers.

The generators, the bench's HTTP clients and every server share the machine's cores. Every wait has a
timeout; only processes this run started are signalled, by pid. Exit status: 0 when every check passed,
1 when one failed, 2 when the run could not complete.

    .venv/bin/python -m bench.channel_features_bench            # 10k connections, 1k recovering clients
    .venv/bin/python -m bench.channel_features_bench --quick    # 1k connections, 200 clients, ~1 minute
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import math
import random
import resource
import selectors
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
    run_and_report,
    timed,
)
from bench.fanout_bench import PAD, Child, Outcome, Publisher, connect, markdown_table, start_generators
from bench.fanout_bench import Options as GeneratorOptions
from bench.loadgen import percentile
from broker.hashing import shard_for

PRESENCE_NAMESPACE = {"name": "room", "presence": True, "allow_subscribe_for_client": True}
PLAIN_NAMESPACE = {"name": "plain", "allow_subscribe_for_client": True}
RECOVERY_CHANNEL = "hist:recovery"


@dataclass
class Options:
    connections: int = 10_000
    channels: int = 1_000
    shards: int = 2
    generators: int = 2
    concurrency: int = 200
    requests: int = 300  # per case and server
    warmup: int = 20
    recovery_clients: int = 1_000
    recovery_publications: int = 1_000
    recovery_rounds: int = 2
    publications: int = 5_000  # per publish phase and round
    publish_rounds: int = 2
    publish_connections: int = 8
    pipeline: int = 16
    subscribers: int = 100
    quick: bool = False
    append_results: Path | None = None
    keep: bool = False


@dataclass
class Result:
    options: Options
    sections: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    def absorb(self, scratch: Outcome) -> None:
        self.checks += scratch.checks
        self.numbers.update(scratch.numbers)

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)


# -- servers and generators ------------------------------------------------------------------------------


def start_server(workdir: Path, shards: int, settings: dict[str, Any]) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(workdir, shards)
    config = orjson.loads(server.config_path.read_bytes())
    config.update(settings)
    server.config_path.write_bytes(orjson.dumps(config))
    server.start()
    return server


def server_pids(server: ServerProcess) -> dict[str, int]:
    with HttpClient(server.port) as client:
        shards = client.api("info", {})["result"]["nodes"][0]["shards"]
    return {"router": server.router_pid()} | {f"shard-{s['index']}": int(s["pid"]) for s in shards}


def num_clients(server: ServerProcess) -> int:
    with HttpClient(server.port) as client:
        return int(client.api("info", {})["result"]["nodes"][0]["num_clients"])


def subscribe(result: Result, label: str, gens: list[Child], timeout: float) -> None:
    for gen in gens:
        gen.tell("subscribe")
    replies = [gen.next("subscribed", timeout) for gen in gens]
    wanted = sum(r["wanted"] for r in replies)
    got = sum(r["replies"] for r in replies)
    errors = {k: v for r in replies for k, v in r["errors"].items()}
    result.check(
        f"{label}: every subscribe answered without error",
        got == wanted and not errors,
        f"{got}/{wanted} {errors}",
    )


def stop_all(gens: list[Child], servers: list[ServerProcess]) -> list[int]:
    ended = [gen.stop(timeout=10) for gen in gens]
    for server in servers:
        server.stop()
    return ended


def cpu_per(spent: dict[str, float], count: int) -> str:
    """Router and summed shard CPU per operation, in µs."""
    router = spent.get("router", 0.0) / max(1, count) * 1e6
    shards = sum(v for role, v in spent.items() if role.startswith("shard")) / max(1, count) * 1e6
    return f"{router:,.0f} / {shards:,.0f}"


# -- 1. presence and channels ----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    request: Callable[[random.Random], tuple[str, str, bytes]]
    valid: Callable[[dict[str, Any]], bool]
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    wrong: int = 0


def one_shard_channel(opts: Options) -> str | None:
    """A channel whose subscribers are all users of one shard, if the placement produced one."""
    for i in range(opts.channels):
        owners = {shard_for(f"u{k}", "", opts.shards) for k in range(i, opts.connections, opts.channels)}
        if len(owners) == 1:
            return f"room:c-{i}"
    return None


def presence_cases(opts: Options) -> list[Case]:
    per_channel = opts.connections // opts.channels
    occupied = opts.channels

    def api(method: str, params: dict[str, Any]) -> tuple[str, str, bytes]:
        return "POST", f"/api/{method}", orjson.dumps(params)

    def stats_of(count: int) -> Callable[[dict[str, Any]], bool]:
        return lambda answer: answer.get("result") == {"num_clients": count, "num_users": count}

    glob = "room:c-99*" if opts.channels >= 1000 else "room:c-9*"
    glob_matches = sum(1 for i in range(opts.channels) if f"room:c-{i}".startswith(glob[:-1]))
    cases = [
        Case("GET /health (bare HTTP)", lambda rng: ("GET", "/health", b""), lambda answer: True),
        Case(
            f"presence_stats, channel with {per_channel} subscribers",
            lambda rng: api("presence_stats", {"channel": f"room:c-{rng.randrange(occupied)}"}),
            stats_of(per_channel),
        ),
        Case(
            f"presence, channel with {per_channel} subscribers",
            lambda rng: api("presence", {"channel": f"room:c-{rng.randrange(occupied)}"}),
            lambda answer: len(answer.get("result", {}).get("presence", {})) == per_channel,
        ),
        Case(
            "presence_stats, channel without subscribers",
            lambda rng: api("presence_stats", {"channel": f"room:empty-{rng.randrange(1 << 30)}"}),
            stats_of(0),
        ),
    ]
    single = one_shard_channel(opts)
    if single is not None:
        cases.append(
            Case(
                f"presence_stats, {per_channel} subscribers all on one shard ({single})",
                lambda rng: api("presence_stats", {"channel": single}),
                stats_of(per_channel),
            )
        )

    def channels_ok(count: int) -> Callable[[dict[str, Any]], bool]:
        def valid(answer: dict[str, Any]) -> bool:
            found = answer.get("result", {}).get("channels", {})
            return len(found) == count and all(c.get("num_clients") == per_channel for c in found.values())

        return valid

    cases += [
        Case(
            f"channels, all ({occupied:,} channels)",
            lambda rng: api("channels", {"pattern": ""}),
            channels_ok(occupied),
        ),
        Case(
            f"channels, pattern `{glob}` ({glob_matches} channels)",
            lambda rng: api("channels", {"pattern": glob}),
            channels_ok(glob_matches),
        ),
    ]
    return cases


def measure_presence(
    cases: list[Case], clients: dict[str, HttpClient], pids: dict[str, dict[str, int]], opts: Options
) -> None:
    labels = list(clients)
    rng = random.Random(11)
    meters = {label: CpuMeter(pids[label]) for label in labels}
    for case in cases:
        case.samples = {label: [] for label in labels}
        case.cpu = {label: {} for label in labels}
    for round_ in range(opts.warmup + opts.requests):
        order = labels if round_ % 2 == 0 else labels[::-1]
        for case in cases:
            method, path, body = case.request(rng)
            for label in order:
                meter = meters[label]
                meter.start()
                elapsed, payload = timed(clients[label], method, path, body)
                spent = meter.stop()
                if method == "POST" and not case.valid(orjson.loads(payload)):
                    case.wrong += 1
                if round_ < opts.warmup:
                    continue
                case.samples[label].append(elapsed)
                for role, used in spent.items():
                    case.cpu[label][role] = case.cpu[label].get(role, 0.0) + used


def presence_section(result: Result, opts: Options, workdir: Path) -> None:
    labels = {"index": True, "no index": False}
    servers: dict[str, ServerProcess] = {}
    gens: dict[str, list[Child]] = {}
    gen_opts = GeneratorOptions(
        connections=opts.connections,
        generators=opts.generators,
        concurrency=opts.concurrency,
        rungs=[("room:c", opts.connections, opts.channels)],
    )
    rates: dict[str, float] = {}
    try:
        for n, (label, shm) in enumerate(labels.items()):
            settings = {"shm_index": shm, "namespaces": [PRESENCE_NAMESPACE]}
            servers[label] = start_server(workdir / f"presence-{n}", opts.shards, settings)
        pids = {label: server_pids(server) for label, server in servers.items()}
        for n, (label, server) in enumerate(servers.items()):
            first_net = 1 + n * opts.generators
            gens[label] = start_generators(
                "switchboard", server.port, first_net, gen_opts, workdir / f"presence-{n}"
            )
            scratch = Outcome(gen_opts)
            rates[label] = connect(scratch, f"presence ({label})", gens[label], pids[label], gen_opts)
            result.absorb(scratch)
            subscribe(result, f"presence ({label})", gens[label], 60 + opts.connections / 100)
        cases = presence_cases(opts)
        with contextlib.ExitStack() as stack:
            clients = {
                label: stack.enter_context(HttpClient(server.port, timeout=30))
                for label, server in servers.items()
            }
            info = {label: client.api("info", {})["result"]["nodes"][0] for label, client in clients.items()}
            for label in labels:
                subs = info[label].get("num_subs")
                result.check(
                    f"presence ({label}): info counts every connection",
                    info[label]["num_clients"] == opts.connections,
                    f"num_clients={info[label]['num_clients']}, num_subs={subs}",
                )
            measure_presence(cases, clients, pids, opts)
        ended = stop_all([g for group in gens.values() for g in group], list(servers.values()))
        gens.clear()
        servers.clear()
        result.check("presence: no connection ended early", sum(ended) == 0, f"{ended}")
    finally:
        stop_all([g for group in gens.values() for g in group], list(servers.values()))
    rows = []
    for case in cases:
        cells = [case.name]
        for label in labels:
            ordered = sorted(case.samples[label])
            p50, p99 = percentile(ordered, 0.5) * 1e3, percentile(ordered, 0.99) * 1e3
            cells.append(f"{p50:.3f} / {p99:.3f}")
            result.numbers[f"{case.name} [{label}] p50 ms"] = p50
            result.numbers[f"{case.name} [{label}] p99 ms"] = p99
        for label in labels:
            cells.append(cpu_per(case.cpu[label], len(case.samples[label])))
        with_index = percentile(sorted(case.samples["index"]), 0.5)
        without = percentile(sorted(case.samples["no index"]), 0.5)
        cells.append(f"{without / with_index:.2f}" if with_index > 0 else "")
        rows.append(tuple(cells))
        result.check(f"presence: every answer right: {case.name}", case.wrong == 0, f"{case.wrong} wrong")
    header = (
        "request",
        "index: p50 / p99 ms",
        "no index: p50 / p99 ms",
        "index: CPU µs router / shards",
        "no index: CPU µs router / shards",
        "p50 no index / index",
    )
    connects = ", ".join(f"{label} {rate:,.0f}/s" for label, rate in rates.items())
    result.sections.append(
        f"Presence and `channels`: {opts.connections:,} WebSocket connections over {opts.channels:,} "
        f"channels ({opts.connections // opts.channels} subscribers each) per server, {opts.shards} shards, "
        f"{opts.requests} sequential keep-alive requests per row and server after {opts.warmup} warm-up "
        f"rounds, the two servers taking turns (connects: {connects}):\n\n" + markdown_table(header, rows)
    )


# -- 2. recovery -----------------------------------------------------------------------------------------


def history_size(opts: Options) -> int:
    return max(2_000, opts.recovery_publications * 2)


def history_settings(opts: Options) -> dict[str, Any]:
    history = {
        "name": "hist",
        "history_size": history_size(opts),
        "history_ttl": "600s",
        "allow_subscribe_for_client": True,
        "allow_recovery": True,
    }
    return {
        "namespaces": [history, PLAIN_NAMESPACE],
        "client_recovery_max_publication_limit": max(1_000, opts.recovery_publications),
    }


def publish_pipelined(port: int, channel: str, count: int) -> list[dict[str, Any]]:
    """``count`` publications, 100 pipelined requests at a time on one connection; the results."""
    results: list[dict[str, Any]] = []
    with Publisher(port, timeout=30) as publisher:
        for start in range(0, count, 100):
            bodies = [
                orjson.dumps({"channel": channel, "data": {"i": i, "p": PAD}})
                for i in range(start, min(count, start + 100))
            ]
            publisher.send("/api/publish", bodies)
            for _ in bodies:
                status, payload = publisher.response()
                answer = orjson.loads(payload)
                if status != 200 or "error" in answer:
                    raise BenchError(f"/api/publish: HTTP {status}: {payload[:200]!r}")
                results.append(answer["result"])
    return results


def recovery_section(result: Result, server: ServerProcess, opts: Options, workdir: Path) -> None:
    pids = server_pids(server)
    args = ["bench.recovery_loadgen", "--port", str(server.port), "--secret", SECRET]
    args += ["--channel", RECOVERY_CHANNEL, "--count", str(opts.recovery_clients), "--net", "20"]
    args += ["--concurrency", str(opts.concurrency)]
    child = Child("recovery-gen", args, workdir)
    rows = []
    try:
        child.next("ready", 60)
        child.tell("go")
        subscribed = child.next("subscribed", 60 + opts.recovery_clients / 50)
        result.check(
            "recovery: every client subscribed recoverable",
            subscribed["subscribed"] == opts.recovery_clients and len(subscribed["epochs"]) == 1,
            f"{subscribed['subscribed']} subscribed, epochs {subscribed['epochs']}, {subscribed['errors']}",
        )
        meter = CpuMeter(pids | {"generator": child.proc.pid})
        for round_ in range(1, opts.recovery_rounds + 1):
            child.tell("disconnect")
            child.next("disconnected", 30)
            deadline = time.monotonic() + 30
            while num_clients(server) and time.monotonic() < deadline:
                time.sleep(0.05)
            gone = num_clients(server) == 0
            published = publish_pipelined(server.port, RECOVERY_CHANNEL, opts.recovery_publications)
            offsets = [int(r["offset"]) for r in published]
            consecutive = offsets == list(range(offsets[0], offsets[0] + len(offsets)))
            meter.start()
            child.tell(f"recover {opts.recovery_publications}")
            outcome = child.next("recovered", 120 + opts.recovery_clients / 10)
            for key in ("p50", "p99", "first", "last"):  # NaN (nobody caught up) arrives as null
                outcome[key] = math.nan if outcome[key] is None else float(outcome[key])
            spent = meter.stop()
            n = opts.recovery_clients
            ok = (
                gone
                and consecutive
                and outcome["caught_up"] == outcome["complete"] == outcome["recovered_true"] == n
                and not outcome["errors"]
            )
            result.check(
                f"recovery round {round_}: every client got all {opts.recovery_publications} publications "
                "with recovered: true",
                ok,
                f"server saw every client leave: {gone}; publish offsets consecutive: {consecutive}; "
                f"caught up {outcome['caught_up']}, complete {outcome['complete']}, recovered "
                f"{outcome['recovered_true']} of {n}; in replies {outcome['from_reply']}, as pushes "
                f"{outcome['from_pushes']}; errors {outcome['errors']}",
            )
            total = outcome["last"] * 1e3
            result.numbers[f"recovery round {round_} total ms"] = total
            result.numbers[f"recovery round {round_} p50 ms"] = outcome["p50"] * 1e3
            result.numbers[f"recovery round {round_} p99 ms"] = outcome["p99"] * 1e3
            delivered = outcome["from_reply"] + outcome["from_pushes"]
            rows.append(
                (
                    str(round_),
                    f"{total:,.0f}",
                    f"{outcome['first'] * 1e3:,.0f}",
                    f"{outcome['p50'] * 1e3:,.0f} / {outcome['p99'] * 1e3:,.0f}",
                    f"{delivered / (outcome['last'] or math.nan):,.0f}",
                    cpu_per(spent, n),
                    f"{spent['generator'] / n * 1e6:,.0f}",
                )
            )
    finally:
        child.stop(timeout=10)
    header = (
        "round",
        "all caught up, ms",
        "first caught up, ms",
        "per client p50 / p99 ms",
        "publications delivered/s",
        "CPU µs per client: router / shards",
        "generator CPU µs per client",
    )
    result.sections.append(
        f"Recovery: {opts.recovery_clients:,} WebSocket clients on `{RECOVERY_CHANNEL}` (history_size "
        f"{history_size(opts):,}), all disconnected, "
        f"{opts.recovery_publications:,} publications, then all reconnect at once with `recover: true`; "
        "times from the reconnect signal (one generator process, its clients on both shards; the "
        "channel's writer is one of them):\n\n" + markdown_table(header, rows)
    )


# -- 3. publish throughput -------------------------------------------------------------------------------


def response_ready(buffer: bytearray) -> bool:
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = bytes(buffer[:end]).lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
    return len(buffer) >= end + 4 + length


def publish_load(
    port: int, channel: str, total: int, connections: int, depth: int, burst: int
) -> tuple[list[float], float, list[dict[str, Any]]]:
    """``total`` publishes over ``connections`` keep-alive connections, ``depth`` in flight on each.

    Returns every request's latency, the wall time from the first request to the last answer, and the
    results. The data carries ``t`` (monotonic time at sending) and ``b`` for the WebSocket generators.
    """
    publishers = [Publisher(port, timeout=30) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    in_flight: dict[Publisher, collections.deque[float]] = {p: collections.deque() for p in publishers}
    latencies: list[float] = []
    results: list[dict[str, Any]] = []
    sent = 0

    def send(publisher: Publisher) -> None:
        nonlocal sent
        now = time.monotonic()
        body = orjson.dumps({"channel": channel, "data": {"t": now, "b": burst, "i": sent, "p": PAD}})
        publisher.send("/api/publish", [body])
        in_flight[publisher].append(now)
        sent += 1

    try:
        began = time.monotonic()
        for publisher in publishers:
            selector.register(publisher.sock, selectors.EVENT_READ, publisher)
            for _ in range(depth):
                if sent < total:
                    send(publisher)
        deadline = began + 60 + total / 100
        while len(results) < total:
            if time.monotonic() > deadline:
                raise BenchError(f"publish to {channel}: {len(results)}/{total} answers in time")
            for key, _ in selector.select(timeout=1.0):
                publisher = key.data
                publisher._fill()
                while response_ready(publisher.buffer):
                    status, payload = publisher.response()
                    now = time.monotonic()
                    latencies.append(now - in_flight[publisher].popleft())
                    answer = orjson.loads(payload)
                    if status != 200 or "error" in answer:
                        raise BenchError(f"/api/publish: HTTP {status}: {payload[:200]!r}")
                    results.append(answer["result"])
                    if sent < total:
                        send(publisher)
        wall = time.monotonic() - began
    finally:
        selector.close()
        for publisher in publishers:
            publisher.sock.close()
    return latencies, wall, results


@dataclass
class PublishPhase:
    history: bool
    subscribers: int
    shape: str
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    count: int = 0
    deliveries: int = 0
    expected: int = 0
    delivery_latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    spent: dict[str, float] = field(default_factory=dict)
    offsets_ok: bool = True


def publish_section(result: Result, server: ServerProcess, opts: Options, workdir: Path) -> None:
    pids = server_pids(server)
    gen_opts = GeneratorOptions(
        connections=opts.subscribers,
        generators=1,
        concurrency=min(100, opts.subscribers),
        rungs=[("hist:subs", opts.subscribers, 1), ("plain:subs", opts.subscribers, 1)],
    )
    gens = start_generators("switchboard", server.port, 30, gen_opts, workdir)
    gen = gens[0]
    shapes = [
        (f"{opts.publish_connections} connections, 1 in flight each", opts.publish_connections, 1),
        (f"1 connection, {opts.pipeline} pipelined", 1, opts.pipeline),
    ]
    phases: dict[tuple[str, bool, int], PublishPhase] = {}
    try:
        scratch = Outcome(gen_opts)
        connect(scratch, "publish subscribers", gens, pids, gen_opts)
        result.absorb(scratch)
        subscribe(result, "publish subscribers", gens, 60)
        meter = CpuMeter(pids | {"generator": gen.proc.pid})
        for round_ in range(opts.publish_rounds):
            for shape, connections, depth in shapes:
                for history in (False, True):
                    for subscribers in (0, opts.subscribers):
                        key = (shape, history, subscribers)
                        phase = phases.setdefault(key, PublishPhase(history, subscribers, shape))
                        namespace = "hist" if history else "plain"
                        channel = f"{namespace}:subs" if subscribers else f"{namespace}:none-{round_}"
                        run_publish_phase(
                            phase, server, gen, channel, connections, depth, meter, opts, workdir
                        )
        ended = gen.stop(timeout=10)
        result.check("publish: no subscriber ended early", ended == 0, f"{ended}; {gen.endings}")
    finally:
        gen.stop(timeout=10)
    rows = []
    for (shape, history, subscribers), phase in phases.items():
        ordered = sorted(phase.latencies)
        rate = phase.count / phase.wall if phase.wall else math.nan
        name = f"{'on' if history else 'off'}, {subscribers} subscribers, {shape}"
        result.numbers[f"publish {name} /s"] = rate
        result.numbers[f"publish {name} p99 ms"] = percentile(ordered, 0.99) * 1e3
        delivered = sorted(phase.delivery_latencies)
        rows.append(
            (
                "on" if history else "off",
                str(subscribers),
                shape,
                f"{rate:,.0f}",
                f"{percentile(ordered, 0.5) * 1e3:.2f} / {percentile(ordered, 0.99) * 1e3:.2f}",
                f"{percentile(delivered, 0.5) * 1e3:.2f} / {percentile(delivered, 0.99) * 1e3:.2f}"
                if subscribers
                else "",
                cpu_per(phase.spent, phase.count),
                f"{phase.spent.get('generator', 0.0) / max(1, phase.count) * 1e6:,.0f}"
                if subscribers
                else "",
            )
        )
        if subscribers:
            result.check(
                f"publish ({name}): every publication reached every subscriber",
                phase.deliveries == phase.expected,
                f"{phase.deliveries}/{phase.expected}",
            )
        if history:
            result.check(
                f"publish ({name}): offsets are distinct and consecutive", phase.offsets_ok, "per round"
            )
    header = (
        "history",
        "subscribers",
        "publishers",
        "publications/s",
        "publish p50 / p99 ms",
        "delivery p50 / p99 ms",
        "CPU µs per publication: router / shards",
        "generator CPU µs per publication",
    )
    result.sections.append(
        f"Publish throughput: `/api/publish`, {opts.publications:,} publications per row and round, "
        f"{opts.publish_rounds} rounds taking turns (rows sum the rounds; 200 warm-up publications before "
        f"each), data about 60 bytes, history_size {history_size(opts):,}"
        f"; subscribers are WebSocket connections of one generator process:\n\n"
        + markdown_table(header, rows)
    )


def run_publish_phase(
    phase: PublishPhase,
    server: ServerProcess,
    gen: Child,
    channel: str,
    connections: int,
    depth: int,
    meter: CpuMeter,
    opts: Options,
    workdir: Path,
) -> None:
    count = opts.publications
    if phase.subscribers:
        gen.completed = set()
        gen.tell("phase " + orjson.dumps({"channels": [channel], "per_burst": count}).decode())
        expect = int(gen.next("armed", 30)["expect"])
    publish_load(server.port, channel, 200, connections, depth, 0)  # warm-up, burst 0
    meter.start()
    latencies, wall, results = publish_load(server.port, channel, count, connections, depth, 1)
    if phase.subscribers:
        gen.wait_burst(1, time.monotonic() + 30 + count / 100)
    for role, used in meter.stop().items():
        phase.spent[role] = phase.spent.get(role, 0.0) + used
    phase.latencies += latencies
    phase.wall += wall
    phase.count += count
    if phase.history:
        offsets = sorted(int(r["offset"]) for r in results)
        phase.offsets_ok &= offsets == list(range(offsets[0], offsets[0] + count))
    else:
        phase.offsets_ok &= all(r == {} for r in results)
    if phase.subscribers:
        path = workdir / "delivery-latencies.bin"
        gen.tell(f"report {path}")
        report_ = gen.next("report", 60)
        phase.deliveries += int(report_["counts"].get("1", 0))
        phase.expected += expect
        chunk = array.array("d")
        chunk.frombytes(path.read_bytes())
        phase.delivery_latencies.extend(chunk)


# -- the run ---------------------------------------------------------------------------------------------


def run(opts: Options) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if -(-opts.connections // opts.generators) > 10_000:
        raise BenchError("more than 10,000 sockets per generator: use more generators")
    result = Result(opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-channel-bench-"))
    try:
        presence_section(result, opts, workdir)
        server = start_server(workdir / "history", opts.shards, history_settings(opts))
        try:
            recovery_section(result, server, opts, workdir / "history")
            publish_section(result, server, opts, workdir / "history")
        finally:
            server.stop()
    finally:
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# -- reporting -------------------------------------------------------------------------------------------


def command_line(opts: Options) -> str:
    if opts.quick:
        return ".venv/bin/python -m bench.channel_features_bench --quick"
    return (
        ".venv/bin/python -m bench.channel_features_bench "
        f"--connections {opts.connections} --channels {opts.channels} --shards {opts.shards} "
        f"--requests {opts.requests} --recovery-clients {opts.recovery_clients} "
        f"--recovery-publications {opts.recovery_publications} --publications {opts.publications}"
    )


def report(result: Result) -> str:
    opts = result.options
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    checks = [f"- check {'ok' if ok else 'FAILED'}: {name} ({detail})" for name, ok, detail in result.checks]
    parts = [
        f"### Channel features, {when}, commit {git_commit()}",
        "",
        f"- machine: {machine()}; the load generators, the bench's HTTP clients and every server process "
        "share the cores",
        f"- command: `{command_line(opts)}`",
        "",
    ]
    for section in result.sections:
        parts += [section, ""]
    return "\n".join([*parts, *checks, ""])


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000, help="WebSocket connections per server")
    parser.add_argument("--channels", type=int, default=1_000, help="channels they subscribe over")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument(
        "--generators", type=int, default=2, help="generator processes per server (≤ 10k each)"
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per presence case and server")
    parser.add_argument("--recovery-clients", type=int, default=1_000)
    parser.add_argument("--recovery-publications", type=int, default=1_000)
    parser.add_argument("--publications", type=int, default=5_000, help="per publish phase and round")
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 200 clients: about a minute")
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    args = parser.parse_args(argv)
    if args.quick:
        opts = quick_options()
    else:
        opts = Options(
            connections=args.connections,
            channels=args.channels,
            shards=args.shards,
            generators=args.generators,
            requests=args.requests,
            recovery_clients=args.recovery_clients,
            recovery_publications=args.recovery_publications,
            publications=args.publications,
        )
    opts.append_results = Path(args.append_results) if args.append_results else None
    opts.keep = args.keep
    return opts


def quick_options() -> Options:
    return Options(
        connections=1_000,
        channels=100,
        generators=1,
        concurrency=100,
        requests=50,
        warmup=5,
        recovery_clients=200,
        recovery_publications=200,
        recovery_rounds=1,
        publications=500,
        publish_rounds=1,
        subscribers=20,
        quick=True,
    )


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
