"""Worst-case ``connections`` CEL benchmark: the costliest admitted expression, and a shard meanwhile.

Starts a real server (supervisor, router, N shards), opens C ``uni_http_stream`` connections with the load
generators of :mod:`bench.connections_bench`, plus one probe connection on shard 0 subscribed to a channel
that shard 0 also writes. Then, in order:

1. **idle**: for a few seconds, a publication to the probe channel every 20 ms (fan-out latency: publish
   sent → publication read by the probe) and a by-user ``connections`` request for the probe's user every
   20 ms (a control-plane round trip to shard 0, served by the same event loop as the supervisor's
   heartbeat);
2. **cheap scan**: ``app_name == "nothing"`` over every connection, sequentially (the fast path);
3. **worst case**: the costliest expression the static limit admits (two nested comprehensions over
   list literals, sized by :func:`costliest_nested`; override with ``--nested N``) over every connection,
   while the probes of phase 1 keep running; scan latency and probe latencies during the scans;
4. **refused**: the 3.6 KB, 900 x 900 nested expression of the issue, which must be answered 107
   (skipped with ``--skip-refused``, e.g. on a commit that would run it);

and finally checks that no shard was restarted. Every wait has a timeout and only processes this run
started are signalled, by pid. From the repository root::

    .venv/bin/python -m bench.cel_worstcase_bench --connections 10000 --shards 2 --generators 2
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.connections_bench import (
    SECRET,
    BenchError,
    Generator,
    HttpClient,
    Options,
    Result,
    ServerProcess,
    git_commit,
    machine,
    percentile,
    run_and_report,
    split,
)
from broker.auth import encode_token
from broker.hashing import shard_for_user, writer_for

CHEAP_SCAN = 'app_name == "nothing"'
ONES_900 = "[" + ",".join(["1"] * 900) + "]"
REFUSED = f"{ONES_900}.all(x, {ONES_900}.all(y, x == y))"
PROBE_INTERVAL = 0.02


def nested(n: int) -> str:
    ones = "[" + ",".join(["1"] * n) + "]"
    return f"{ones}.all(x, {ones}.all(y, x == y))"


def costliest_nested() -> int:
    """The largest n whose n x n nested expression the default cost limit admits."""
    from broker.cel import CONNECTION_VARIABLES, CelError, compile_filter

    variables = {name: (lambda s: s) for name in CONNECTION_VARIABLES}
    n = 1
    while True:
        try:
            compile_filter(nested(n + 1), variables)
        except CelError:
            return n
        n += 1


@dataclass
class WorstOptions:
    connections: int = 10_000
    shards: int = 2
    generators: int = 2
    concurrency: int = 200
    nested: int = 0  # 0 = the costliest the cost limit admits
    scans: int = 3
    cheap_scans: int = 20
    idle_seconds: float = 3.0
    api_shard_timeout: float = 60.0
    skip_refused: bool = False
    append_results: Path | None = None


class Probe:
    """A uni_http_stream connection on shard 0 that records when each publication arrives."""

    def __init__(self, port: int, user: str, channel: str) -> None:
        token = encode_token({"sub": user, "exp": int(time.time()) + 3600, "channels": [channel]}, SECRET)
        body = orjson.dumps({"token": token, "name": "probe"})
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.sendall(
            (
                "POST /connection/uni_http_stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        self.arrivals: dict[int, float] = {}
        self.connected = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.connected.wait(10):
            raise BenchError("probe: no connect push within 10 s")

    def _read(self) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                buffer += data
                # Chunk framing is ignored: each message is one JSON line; publications carry an id.
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if not line.startswith(b"{"):
                        continue
                    message = orjson.loads(line)
                    if "connect" in message:
                        self.connected.set()
                    elif "pub" in message:
                        self.arrivals[message["pub"]["data"]["i"]] = time.perf_counter()

    def close(self) -> None:
        self.sock.close()


class Prober:
    """Publishes to the probe channel and asks shard 0 a by-user question every PROBE_INTERVAL."""

    def __init__(self, port: int, probe: Probe, user: str, channel: str) -> None:
        self.port = port
        self.probe = probe
        self.user = user
        self.channel = channel
        self.sent: dict[int, float] = {}
        self.round_trips: list[float] = []
        self._next = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self.sent.clear()
        self.round_trips.clear()
        self.probe.arrivals.clear()
        self._threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._ask, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> tuple[list[float], list[float], int]:
        """(fan-out latencies, control round trips, publications not delivered within 5 s)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        deadline = time.monotonic() + 5
        while len(self.probe.arrivals) < len(self.sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = [self.probe.arrivals[i] - t for i, t in self.sent.items() if i in self.probe.arrivals]
        return latencies, list(self.round_trips), len(self.sent) - len(latencies)

    def _publish(self) -> None:
        with HttpClient(self.port, timeout=120) as client:
            while not self._stop.is_set():
                i = self._next
                self._next += 1
                self.sent[i] = time.perf_counter()
                client.api("publish", {"channel": self.channel, "data": {"i": i}})
                self._stop.wait(PROBE_INTERVAL)

    def _ask(self) -> None:
        with HttpClient(self.port, timeout=120) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                client.api("connections", {"user": self.user})
                self.round_trips.append(time.perf_counter() - began)
                self._stop.wait(PROBE_INTERVAL)


def probe_identity(shards: int) -> tuple[str, str]:
    """A user living on shard 0 and a channel written by shard 0."""
    user = next(f"probe-{i}" for i in range(10_000) if shard_for_user(f"probe-{i}", shards) == 0)
    channel = next(f"probe-{i}" for i in range(10_000) if writer_for(f"probe-{i}", shards) == 0)
    return user, channel


def add_latencies(result: Result, name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    if not ordered:
        result.note(name, "no samples")
        return
    shown = " / ".join(f"{percentile(ordered, q) * 1000:,.1f}" for q in (0.5, 0.99)) + (
        f" / {ordered[-1] * 1000:,.1f} ms (n={len(ordered)})"
    )
    result.note(name + " p50 / p99 / max", shown)
    result.numbers[name + " p99 ms"] = percentile(ordered, 0.99) * 1000
    result.numbers[name + " max ms"] = ordered[-1] * 1000


def scan(client: HttpClient, expression: str) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    status, body = client.request("POST", "/api/connections", orjson.dumps({"expression": expression}))
    elapsed = time.perf_counter() - began
    if status != 200:
        raise BenchError(f"connections: HTTP {status}: {body[:200]!r}")
    answer: dict[str, Any] = orjson.loads(body)
    return elapsed, answer


def run(opts: WorstOptions) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    size = opts.nested or costliest_nested()
    expression = nested(size)
    gen_opts = Options(
        connections=opts.connections, users=1_000, generators=opts.generators, concurrency=opts.concurrency
    )
    result = Result(gen_opts)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-celbench-"))
    extra = {"api_shard_timeout": f"{opts.api_shard_timeout:g}s"}
    server = ServerProcess(workdir, opts.shards, extra)
    generators: list[Generator] = []
    probe: Probe | None = None
    try:
        server.start()
        for index, (start, count) in enumerate(split(opts.connections, opts.generators)):
            generators.append(Generator(index, server.port, start, count, gen_opts, workdir))
        for gen in generators:
            gen.expect("ready", 60)
        for gen in generators:
            gen.tell("go")
        for gen in generators:
            connected = gen.expect("connected", 90 + opts.connections / 100)["connected"]
            result.check(f"generator {gen.index} connected", connected == gen.count, f"{connected}")
        user, channel = probe_identity(opts.shards)
        probe = Probe(server.port, user, channel)
        prober = Prober(server.port, probe, user, channel)
        with HttpClient(server.port, timeout=300) as client:
            pids = {s["index"]: s["pid"] for s in client.api("info", {})["result"]["nodes"][0]["shards"]}
            prober.start()
            time.sleep(opts.idle_seconds)
            fanout, round_trips, lost = prober.stop()
            add_latencies(result, "idle: fan-out latency on shard 0", fanout)
            add_latencies(result, "idle: control round trip to shard 0", round_trips)

            cheap = []
            answers = []
            for _ in range(opts.cheap_scans):
                elapsed, answer = scan(client, CHEAP_SCAN)
                answers.append(answer)
                cheap.append(elapsed)
            result.check(
                "every cheap scan answered, empty",
                all(a == {"result": {"connections": {}}} for a in answers),
                str(answers[0])[:200],
            )
            add_latencies(result, f"cheap scan `{CHEAP_SCAN}` over {opts.connections:,}", cheap)

            result.note("worst-case expression", f"{size} x {size} nested `all`, {len(expression):,} chars")
            prober.start()
            time.sleep(0.5)
            worst = []
            for _ in range(opts.scans):
                elapsed, answer = scan(client, expression)
                matched = len(answer.get("result", {}).get("connections", {}))
                result.check(
                    "worst-case scan lists every connection",
                    matched == opts.connections + 1,
                    f"{matched} listed; {str(answer)[:200] if not matched else ''}",
                )
                worst.append(elapsed)
            fanout, round_trips, lost_during = prober.stop()
            add_latencies(result, "worst-case scan latency", worst)
            add_latencies(result, "during the scans: fan-out latency on shard 0", fanout)
            add_latencies(result, "during the scans: control round trip to shard 0", round_trips)
            result.check(
                "every probe publication delivered", lost == lost_during == 0, f"{lost}, {lost_during}"
            )

            if not opts.skip_refused:
                elapsed, answer = scan(client, REFUSED)
                code = answer.get("error", {}).get("code")
                result.check("the 3.6 KB 900 x 900 expression is 107", code == 107, str(answer)[:200])
                result.add("refused 900 x 900 expression: answer time", elapsed * 1000, "ms")
            after = {s["index"]: s.get("pid") for s in client.api("info", {})["result"]["nodes"][0]["shards"]}
            result.check("no shard was restarted", after == pids, f"{pids} → {after}")
        ended = [gen.stop() for gen in generators]
        result.check("no stream ended before the generators closed it", sum(ended) == 0, f"{ended}")
    finally:
        if probe is not None:
            probe.close()
        for gen in generators:
            if gen.proc.poll() is None:
                gen.stop(timeout=5)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    result.numbers["nested"] = size
    return result


def report_for(opts: WorstOptions) -> Any:
    def report(result: Result) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = (
            ".venv/bin/python -m bench.cel_worstcase_bench "
            f"--connections {opts.connections} --shards {opts.shards} --generators {opts.generators}"
            + (f" --nested {opts.nested}" if opts.nested else "")
            + (" --skip-refused" if opts.skip_refused else "")
        )
        return "\n".join(
            [
                f"### CEL worst case, {when}, commit {git_commit()}",
                "",
                f"- machine: {machine()}; load generators and probes share the cores with the server",
                f"- command: `{command}`",
                f"- shape: {opts.connections:,} uni_http_stream connections + 1 probe, {opts.shards} shards; "
                f"{opts.scans} worst-case scans, {opts.cheap_scans} cheap scans; probes every "
                f"{PROBE_INTERVAL * 1000:.0f} ms",
                "",
                result.table(),
                "",
            ]
        )

    return report


def parse_args(argv: list[str] | None = None) -> WorstOptions:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--generators", type=int, default=2)
    parser.add_argument(
        "--nested", type=int, default=0, help="n of the n x n expression (0: costliest admitted)"
    )
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--skip-refused", action="store_true")
    parser.add_argument("--append-results", type=Path, default=None)
    args = parser.parse_args(argv)
    return WorstOptions(
        connections=args.connections,
        shards=args.shards,
        generators=args.generators,
        nested=args.nested,
        scans=args.scans,
        skip_refused=args.skip_refused,
        append_results=args.append_results,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    return run_and_report(opts, run, report_for(opts))


if __name__ == "__main__":
    sys.exit(main())
