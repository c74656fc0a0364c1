"""Whole-server benchmark of connection setup, memory and the ``connections`` API.

Starts a real server (supervisor, router, N shards) on a free port, then in one run:

1. **connects/s**: G load-generator processes (:mod:`bench.loadgen`, trio) open C ``uni_http_stream``
   connections for U users and wait for every ``connect`` push; the time from ``go`` to the last push;
2. **shard RSS per connection**: the shards' ``VmRSS`` after every connect minus before, over C;
3. **``connections`` by user** over one keep-alive HTTP connection, sequential requests for random users,
   alternating with ``GET /health`` on the same connection as the bare HTTP cost of the router;
4. **CEL scans** over every shard: one expression matching every connection, one selective expression
   without index hints, one matching nothing (the scan without result encoding and transfer);
5. **``/metrics`` scrapes** alternating with ``GET /health``: latency, size, router and shard CPU per
   scrape, with the scraped client count checked against C;
6. **revoke → close**: WebSocket clients sharing a token ``jti`` on both shards, ``revoke_token`` called,
   the time until the last of them is closed with 3500, with every connection above still held.

Correctness is checked on the way: every client id a generator saw in its connect push must be in the
by-user answer for its user (and nothing else), the full scan must return exactly C connections, and the
info API must count C clients.

Everything it starts it stops by pid; every wait has a timeout. Run it from the repository root::

    .venv/bin/python -m bench.connections_bench --connections 10000 --users 1000 --shards 2 --generators 2
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import queue
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from bench import proxy_backend
from bench.loadgen import percentile
from bench.profiling import profiled
from tests.support.server import Server, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
API_KEY = "bench-api-key"
MAX_SOCKETS_PER_GENERATOR = 10_000

FULL_SCAN = 'app_name == "bench"'
SELECTIVE_SCAN = 'user.endsWith("7")'
EMPTY_SCAN = 'app_name == "nothing"'


class BenchError(Exception):
    """The run could not be completed (a process failed, a wait timed out, an answer was wrong)."""


@dataclass
class Options:
    connections: int = 10_000
    users: int = 1_000
    shards: int = 2
    generators: int = 2
    concurrency: int = 200
    by_user_requests: int = 2_000
    scan_requests: int = 50
    verify_users: int = 1000
    scrapes: int = 200
    revoke_rounds: int = 20
    settle: float = 1.0
    append_results: Path | None = None
    profile: Path | None = None
    keep: bool = False
    # Clients without a token, authenticated by a connect proxy backend (its own process) that names
    # the user from the app name.
    connect_proxy: bool = False
    connect_proxy_placement: str = "shard"  # who calls the backend: "shard" or "router"


@dataclass
class Result:
    options: Options
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str, target: str = "", passed: bool | None = None) -> None:
        self.numbers[name] = value
        verdict = "" if passed is None else ("ok" if passed else "MISSED")
        shown = (
            f"{value:,.0f}" if unit in ("/s", "") else f"{value:,.3f}" if unit == "ms" else f"{value:,.2f}"
        )
        self.rows.append((name, f"{shown} {unit}".strip(), target, verdict))

    def note(self, name: str, text: str) -> None:
        self.rows.append((name, text, "", ""))

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append((name, passed, detail))

    @property
    def correct(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def table(self) -> str:
        widths = [max(len(row[i]) for row in [*self.rows, _HEADER]) for i in range(4)]
        lines = [_format_row(_HEADER, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        lines += [_format_row(row, widths) for row in self.rows]
        lines.append("")
        lines += [
            f"- check {'ok' if ok else 'FAILED'}: {name} ({detail})" for name, ok, detail in self.checks
        ]
        return "\n".join(lines)


_HEADER = ("metric", "value", "target", "")


def _format_row(row: tuple[str, str, str, str], widths: list[int]) -> str:
    return "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"


# -- processes -------------------------------------------------------------------------------------------


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``RssShmem``: the part in shared memory)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by each named process between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.began: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.began = {role: cpu_seconds(pid) for role, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.spent = {role: cpu_seconds(pid) - self.began[role] for role, pid in self.pids.items()}
        return self.spent


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: only this process, by its pid."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class ServerProcess(Server):
    """The tests' server launcher (tests/support/server.py) with the benchmarks' secrets, info-level logs
    and :class:`BenchError` for a server that does not come up. ``extra`` overrides config keys."""

    def __init__(self, workdir: Path, shards: int, extra: dict[str, Any] | None = None) -> None:
        settings: dict[str, Any] = {
            "token_hmac_secret_key": SECRET,
            "api_key": API_KEY,
            "uni_sse": False,
            "log_level": "info",
            **(extra or {}),
        }
        super().__init__(workdir, shards, directory=workdir, **settings)

    def start(self, timeout: float = 30.0) -> ServerProcess:
        try:
            super().start(timeout)
        except (AssertionError, RuntimeError) as exc:
            raise BenchError(str(exc)) from None
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, SIGKILL after ``timeout``; the children are made sure of by their pids."""
        with contextlib.suppress(AssertionError):
            return super().stop(timeout)
        return -signal.SIGKILL


class Generator:
    """One load-generator process and a thread collecting its stdout events."""

    def __init__(self, index: int, port: int, start: int, count: int, opts: Options, workdir: Path) -> None:
        self.index = index
        self.count = count
        self.out = workdir / f"clients-{index}.json"
        self.stderr_path = workdir / f"loadgen-{index}.log"
        args = [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--secret", SECRET]
        args += ["--start", str(start), "--count", str(count), "--users", str(opts.users)]
        args += ["--net", str(index + 1), "--concurrency", str(opts.concurrency), "--out", str(self.out)]
        if opts.connect_proxy:
            args.append("--no-token")
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT
            )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self.events.put(orjson.loads(line))
        self.events.put({"event": "exited"})

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"generator {self.index}: no {name!r} within {timeout:.0f}s") from None
        if event.get("event") != name:
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"generator {self.index}: expected {name!r}, got {event}\n{tail}")
        return event

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()

    def clients(self) -> dict[str, str]:
        data: dict[str, str] = orjson.loads(self.out.read_bytes())
        return data

    def stop(self, timeout: float = 20.0) -> int:
        """Close its streams and let it exit; returns how many streams the server ended early."""
        ended_early = -1
        self.tell("stop")
        with contextlib.suppress(BenchError):
            ended_early = int(self.expect("closed", timeout)["ended_early"])
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return ended_early


# -- HTTP ------------------------------------------------------------------------------------------------


class HttpClient:
    """A minimal keep-alive HTTP/1.1 client on one socket, so that client overhead stays small and fixed."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode("latin-1") + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length < 0:
            raise BenchError(f"{path}: response without Content-Length: {lines}")
        total = end + 4 + length
        while len(self.buffer) < total:
            self._fill()
        payload = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        return status, payload

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise BenchError("the server closed the keep-alive connection")
        self.buffer += data

    def api(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        status, body = self.request("POST", f"/api/{method}", orjson.dumps(params))
        if status != 200:
            raise BenchError(f"/api/{method}: HTTP {status}: {body[:200]!r}")
        answer: dict[str, Any] = orjson.loads(body)
        if "error" in answer:
            raise BenchError(f"/api/{method}: {answer['error']}")
        return answer


def timed(client: HttpClient, method: str, path: str, body: bytes = b"") -> tuple[float, bytes]:
    began = time.perf_counter()
    status, payload = client.request(method, path, body)
    elapsed = time.perf_counter() - began
    if status != 200:
        raise BenchError(f"{path}: HTTP {status}: {payload[:200]!r}")
    return elapsed, payload


def connections_of(payload: bytes) -> dict[str, Any]:
    answer = orjson.loads(payload)
    if "error" in answer:
        raise BenchError(f"connections: {answer['error']}")
    found: dict[str, Any] = answer["result"]["connections"]
    return found


# -- phases ----------------------------------------------------------------------------------------------


def split(total: int, parts: int) -> list[tuple[int, int]]:
    base, extra = divmod(total, parts)
    ranges, start = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        ranges.append((start, count))
        start += count
    return ranges


def shard_rss(pids: list[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


def add_latencies(result: Result, name: str, samples: list[float], target_ms: float | None) -> None:
    ordered = sorted(samples)
    p50, p99, worst = (percentile(ordered, 0.5) * 1e3, percentile(ordered, 0.99) * 1e3, ordered[-1] * 1e3)
    result.add(f"{name} p50", p50, "ms")
    if target_ms is None:
        result.add(f"{name} p99", p99, "ms")
    else:
        result.add(f"{name} p99", p99, "ms", f"≤ {target_ms:g} ms", p99 <= target_ms)
    result.add(f"{name} max", worst, "ms")


def measure_connects(
    result: Result, generators: list[Generator], server_pids: dict[str, int], opts: Options
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    for gen in generators:
        gen.expect("ready", 60)
    generator_pids = {f"generator-{gen.index}": gen.proc.pid for gen in generators}
    meter = CpuMeter(server_pids | generator_pids)
    with profiled(opts.profile, "connect", server_pids | generator_pids):
        meter.start()
        for gen in generators:
            gen.tell("go")
        timeout = 90 + opts.connections / 100  # beyond the generators' own deadline, for their report
        reports = [gen.expect("connected", timeout) for gen in generators]
        spent = meter.stop()
    began = min(r["began"] for r in reports)
    finished = max(r["last_done"] for r in reports)
    connected = sum(r["connected"] for r in reports)
    overall = connected / (finished - began)
    result.add("connects/s, all generators", overall, "/s", "≥ 5,000/s", overall >= 5000)
    for gen, report in zip(generators, reports, strict=True):
        rate = report["connected"] / (report["last_done"] - report["began"])
        result.add(f"connects/s, generator {gen.index}", rate, "/s")
    result.add("connect latency p50 (all)", max(r["latency_p50"] for r in reports) * 1e3, "ms")
    result.add("connect latency p99 (worst generator)", max(r["latency_p99"] for r in reports) * 1e3, "ms")
    result.add(
        "longest pause without a connect (worst generator)",
        max(r["longest_gap"] for r in reports) * 1e3,
        "ms",
    )
    if connected:
        shards = [role for role in server_pids if role.startswith("shard")]
        generators_cpu = sum(spent[role] for role in generator_pids)
        result.add("CPU per connect: router", spent["router"] / connected * 1e6, "µs")
        result.add("CPU per connect: shards (sum)", sum(spent[r] for r in shards) / connected * 1e6, "µs")
        result.add("CPU per connect: generators (sum)", generators_cpu / connected * 1e6, "µs")
        wall = max(r["last_done"] for r in reports) - min(r["began"] for r in reports)
        result.add("CPU busy during connects (of 2 cores)", sum(spent.values()) / wall * 100, "%")
    failed = sum(r["failed"] for r in reports)
    errors = {k: v for r in reports for k, v in r["errors"].items()}
    result.check(
        "every connection got its connect push", failed == 0, f"{connected} ok, {failed} failed {errors}"
    )
    clients: dict[str, str] = {}
    for gen in generators:
        clients.update(gen.clients())
    result.check("client ids are unique", len(clients) == connected, f"{len(clients)} ids")
    return clients, reports


def measure_by_user(
    result: Result, client: HttpClient, clients: dict[str, str], meter: CpuMeter, opts: Options
) -> None:
    by_user: dict[str, set[str]] = {}
    for client_id, user in clients.items():
        by_user.setdefault(user, set()).add(client_id)
    rng = random.Random(7)
    users = [str(u) for u in range(opts.users)]
    health: list[float] = []
    lookups: list[float] = []
    wrong: list[str] = []
    checked: set[str] = set()
    for _ in range(50):  # warm-up: first requests pay for imports, caches and the ZeroMQ connections
        timed(client, "GET", "/health")
        timed(client, "POST", "/api/connections", orjson.dumps({"user": rng.choice(users), "expression": ""}))
    meter.start()
    for _ in range(opts.by_user_requests):
        elapsed, _ = timed(client, "GET", "/health")
        health.append(elapsed)
        user = rng.choice(users)
        elapsed, payload = timed(
            client, "POST", "/api/connections", orjson.dumps({"user": user, "expression": ""})
        )
        lookups.append(elapsed)
        found = connections_of(payload)
        checked.add(user)
        if set(found) != by_user.get(user, set()) or any(c["user"] != user for c in found.values()):
            wrong.append(user)
    spent = meter.stop()
    unequal: list[str] = []
    compared = 0
    for user in users:
        if compared >= opts.verify_users:
            break
        compared += 1
        found = connections_of(client.request("POST", "/api/connections", orjson.dumps({"user": user}))[1])
        checked.add(user)
        if set(found) != by_user.get(user, set()):
            wrong.append(user)
        # The router's answer (shared memory) against the shard's own (an expression is always
        # evaluated by the shard): the same JSON.
        body = orjson.dumps({"user": user, "expression": "true"})
        if connections_of(client.request("POST", "/api/connections", body)[1]) != found:
            unequal.append(user)
    add_latencies(result, "GET /health (bare HTTP)", health, None)
    add_latencies(result, "connections by user", lookups, 1.0)
    diff = percentile(sorted(lookups), 0.5) - percentile(sorted(health), 0.5)
    result.add("by user minus /health, p50", diff * 1e3, "ms")
    for share, label in ((0.5, "p50"), (0.99, "p99")):
        ratio = percentile(sorted(lookups), share) / percentile(sorted(health), share)
        result.add(f"by user / /health, {label}", ratio, "x", "≤ 1.3x", ratio <= 1.3)
    pairs = max(1, opts.by_user_requests)
    result.add("router CPU per /health + by-user pair", spent["router"] / pairs * 1e6, "µs")
    shard_cpu = sum(v for role, v in spent.items() if role.startswith("shard"))
    result.add("shard CPU per by-user request", shard_cpu / pairs * 1e6, "µs")
    result.check(
        "by-user answers equal the shard's own answer",
        not unequal,
        f"{compared} users compared, {len(unequal)} differ {unequal[:5]}",
    )
    result.check(
        "by-user answers list exactly the user's client ids",
        not wrong and len(checked) >= min(opts.verify_users, opts.users),
        f"{len(checked)} users checked, {len(wrong)} wrong {wrong[:5]}",
    )


def measure_scans(
    result: Result, client: HttpClient, clients: dict[str, str], meter: CpuMeter, opts: Options
) -> None:
    expected_selective = {c for c, u in clients.items() if u.endswith("7")}
    cases = [
        ("CEL full scan, all match", FULL_SCAN, set(clients), 10.0),
        ("CEL selective, user.endsWith 7", SELECTIVE_SCAN, expected_selective, None),
        ("CEL scan, nothing matches", EMPTY_SCAN, set(), None),
    ]
    samples: dict[str, list[float]] = {name: [] for name, *_ in cases}
    sizes: dict[str, int] = {}
    wrong: dict[str, str] = {}
    spent: dict[str, dict[str, float]] = {name: {} for name, *_ in cases}
    for round_ in range(opts.scan_requests + 3):
        for name, expression, expected, _ in cases:  # alternate, so that drift hits every case alike
            body = orjson.dumps({"user": "", "expression": expression})
            meter.start()
            elapsed, payload = timed(client, "POST", "/api/connections", body)
            if round_ == 0 and name == cases[0][0]:
                # The very first CEL request after start: every process builds its CEL parser now.
                result.add("first CEL request after start (cold)", elapsed * 1e3, "ms")
            if round_ < 3:
                continue  # warm-up: compile caches
            for role, used in meter.stop().items():
                spent[name][role] = spent[name].get(role, 0.0) + used
            samples[name].append(elapsed)
            sizes[name] = len(payload)
            answer = orjson.loads(payload)
            found = answer.get("result", {}).get("connections", {})
            if set(found) != expected or "unavailable_shards" in answer.get("result", {}):
                wrong[name] = f"{len(found)} returned, {len(expected)} expected"
    for name, expression, expected, target in cases:
        result.note(f"{name}: `{expression}`", f"{len(expected):,} results")
        add_latencies(result, name, samples[name], target)
        result.add(f"{name}, response size", sizes[name] / 1024, "KiB")
        rounds = max(1, len(samples[name]))
        router_ms = spent[name].get("router", 0.0) / rounds * 1e3
        shard_ms = (
            max((v for r, v in spent[name].items() if r.startswith("shard")), default=0.0) / rounds * 1e3
        )
        result.add(f"{name}, router CPU per request", router_ms, "ms")
        result.add(f"{name}, busiest shard CPU per request", shard_ms, "ms")
    result.check(
        "full scan returns every connection",
        FULL_SCAN not in wrong and "CEL full scan, all match" not in wrong,
        wrong.get("CEL full scan, all match", f"{len(clients)} returned"),
    )
    result.check("selective and empty scans return exactly the matches", not wrong, str(wrong or "all exact"))


def measure_metrics(
    result: Result, client: HttpClient, clients: dict[str, str], meter: CpuMeter, opts: Options
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(5):  # warm-up
        timed(client, "GET", "/metrics")
    health: list[float] = []
    scrapes: list[float] = []
    payload = b""
    meter.start()
    for _ in range(opts.scrapes):
        health.append(timed(client, "GET", "/health")[0])
        elapsed, payload = timed(client, "GET", "/metrics")
        scrapes.append(elapsed)
    spent = meter.stop()
    count = max(1, opts.scrapes)
    add_latencies(result, "GET /metrics", scrapes, None)
    result.add("GET /metrics, response size", len(payload) / 1024, "KiB")
    result.add("router CPU per scrape (and a /health)", spent["router"] / count * 1e3, "ms")
    shard_cpu = sum(v for role, v in spent.items() if role.startswith("shard"))
    result.add("shard CPU per scrape (all shards)", shard_cpu / count * 1e3, "ms")
    scraped = {
        sample.name: sample.value
        for family in text_string_to_metric_families(payload.decode())
        for sample in family.samples
        if not sample.labels
    }
    num_clients = int(scraped.get("centrifugo_node_num_clients", -1))
    result.check(
        "/metrics counts every connection", num_clients == len(clients), f"num_clients={num_clients}"
    )


async def _revoke_rounds(port: int, rounds: int, shards: int) -> tuple[list[float], list[str]]:
    from tests.integration.wsclient import WsClient, users_on_shards
    from tests.support.tokens import make_token

    latencies: list[float] = []
    wrong: list[str] = []
    with HttpClient(port) as api:
        for n in range(rounds):
            jti = f"bench-revoke-{n}-{time.time_ns()}"
            users = users_on_shards(f"revoke-{n}", shards)
            tokens = [make_token(user, SECRET, jti=jti) for user in users + users[:1]]
            sessions = [await WsClient.connected(port, token) for token in tokens]
            began = time.perf_counter()
            api.api("revoke_token", {"uid": jti, "expire_at": int(time.time()) + 3600})
            codes = [(await session.closed(timeout=5))[0] for session in sessions]
            latencies.append(time.perf_counter() - began)
            if set(codes) != {3500}:
                wrong.append(f"{jti}: {codes}")
    return latencies, wrong


def measure_revoke(result: Result, port: int, opts: Options) -> None:
    import asyncio

    latencies, wrong = asyncio.run(_revoke_rounds(port, opts.revoke_rounds, opts.shards))
    add_latencies(result, "revoke_token → last connection closed (3 on every shard)", latencies, 1000.0)
    result.check("every revoked connection closed with 3500", not wrong, str(wrong[:3] or "all 3500"))


def start_proxy_backend() -> tuple[multiprocessing.process.BaseProcess, str]:
    port = free_port()
    try:
        return proxy_backend.start(port), f"http://127.0.0.1:{port}/connect"
    except RuntimeError as exc:
        raise BenchError(str(exc)) from None


def run(opts: Options) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server's shards
    per_generator = -(-opts.connections // opts.generators)
    if per_generator > MAX_SOCKETS_PER_GENERATOR:
        raise BenchError(f"{per_generator} sockets per generator; use more generators (≤ 10,000 each)")
    result = Result(opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    backend = start_proxy_backend() if opts.connect_proxy else None
    extra: dict[str, Any] = {"prometheus": True}
    if backend is not None:
        extra |= {
            "proxy_connect_endpoint": backend[1],
            "proxy_connect_placement": opts.connect_proxy_placement,
        }
    server = ServerProcess(workdir, opts.shards, extra)
    generators: list[Generator] = []
    try:
        server.start()
        with HttpClient(server.port) as client:
            shards = client.api("info", {})["result"]["nodes"][0]["shards"]
            pids = [int(s["pid"]) for s in shards]
            server_pids = {"router": server.router_pid()} | {
                f"shard-{s['index']}": int(s["pid"]) for s in shards
            }
            time.sleep(opts.settle)
            before = shard_rss(pids)
            for index, (start, count) in enumerate(split(opts.connections, opts.generators)):
                generators.append(Generator(index, server.port, start, count, opts, workdir))
            clients, _ = measure_connects(result, generators, server_pids, opts)
            time.sleep(opts.settle)
            after = shard_rss(pids)
            shmem = sum(rss_bytes(pid, "RssShmem") for pid in pids)
            per_conn = (after - before) / max(1, len(clients))
            result.add("shard RSS per connection", per_conn / 1024, "KiB", "≤ 4 KiB", per_conn <= 4096)
            rss_change = f"{before / 2**20:,.1f} → {after / 2**20:,.1f} MiB"
            result.note("shard RSS before → after (all shards)", rss_change)
            result.add("of which shared memory (RssShmem, all shards)", shmem / 2**20, "MiB")
            info = client.api("info", {})["result"]["nodes"][0]
            result.check(
                "info counts every connection",
                info["num_clients"] == len(clients) == opts.connections,
                f"num_clients={info['num_clients']}, per shard "
                + ", ".join(str(s.get("num_clients")) for s in info["shards"]),
            )
            meter = CpuMeter(server_pids)
            with profiled(opts.profile, "by_user", server_pids):
                measure_by_user(result, client, clients, meter, opts)
            with profiled(opts.profile, "scans", server_pids):
                measure_scans(result, client, clients, meter, opts)
            with profiled(opts.profile, "metrics", server_pids):
                measure_metrics(result, client, clients, meter, opts)
            measure_revoke(result, server.port, opts)
            result.add("shard RSS after the queries (all shards)", shard_rss(pids) / 2**20, "MiB")
        ended = [gen.stop() for gen in generators]
        result.check("no stream ended before the generators closed it", sum(ended) == 0, f"{ended}")
    finally:
        for gen in generators:
            if gen.proc.poll() is None:
                gen.stop(timeout=5)
        server.stop()
        if backend is not None:
            backend[0].terminate()
            backend[0].join(5)
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# -- reporting -------------------------------------------------------------------------------------------


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "broker", "router", "shards"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        suffix = " (server code with uncommitted changes)" if dirty.stdout.strip() else ""
        return (out.stdout.strip() or "unknown") + suffix
    return "unknown"


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def command_line(opts: Options) -> str:
    return (
        ".venv/bin/python -m bench.connections_bench "
        f"--connections {opts.connections} --users {opts.users} --shards {opts.shards} "
        f"--generators {opts.generators} --concurrency {opts.concurrency}"
    )


def report(result: Result) -> str:
    opts = result.options
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"### {when}, commit {git_commit()}",
            "",
            f"- machine: {machine()}; load generators share the cores with the server",
            f"- command: `{command_line(opts)}`",
            f"- shape: {opts.connections:,} uni_http_stream connections, {opts.users:,} users, "
            f"{opts.shards} shards, {opts.generators} generator processes ({opts.concurrency} connects in "
            f"flight each); {opts.by_user_requests:,} by-user requests, {opts.scan_requests} per scan",
            "",
            result.table(),
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes (≤ 10k each)")
    parser.add_argument("--concurrency", type=int, default=200, help="connects in flight per generator")
    parser.add_argument("--requests", type=int, default=2_000, help="by-user requests (and /health ones)")
    parser.add_argument("--scan-requests", type=int, default=50, help="requests per CEL expression")
    parser.add_argument("--smoke", action="store_true", help="a small, quick run: 1,000 connections")
    parser.add_argument("--append-results", nargs="?", const=str(ROOT / "bench" / "RESULTS.md"), default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server log)")
    parser.add_argument(
        "--profile", type=Path, default=None, help="write py-spy profiles of each phase to this directory"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke_options()
    return Options(
        connections=args.connections,
        users=args.users,
        shards=args.shards,
        generators=args.generators,
        concurrency=args.concurrency,
        by_user_requests=args.requests,
        scan_requests=args.scan_requests,
        verify_users=min(1000, args.users),
        append_results=Path(args.append_results) if args.append_results else None,
        keep=args.keep,
        profile=args.profile,
    )


def smoke_options() -> Options:
    return Options(
        connections=1_000,
        users=100,
        shards=2,
        generators=1,
        concurrency=100,
        by_user_requests=200,
        scan_requests=10,
        verify_users=100,
        settle=0.5,
    )


def run_and_report(opts: Any, run: Callable[[Any], Any], report: Callable[[Any], str]) -> int:
    """The command line's common end: run, print the report, append it to RESULTS.md when asked.

    Exit status: 0 every check passed, 1 a check failed, 2 the run could not complete.
    """
    try:
        outcome = run(opts)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    text = report(outcome)
    print(text)
    if opts.append_results is not None:
        with open(opts.append_results, "a") as out:
            out.write("\n" + text)
    return 0 if outcome.correct else 1


def main(argv: list[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, report)


if __name__ == "__main__":
    sys.exit(main())
