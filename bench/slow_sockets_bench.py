"""Slow and idle sockets against the router: /health latency while they are held, and how soon they go.

One run: start the server (1 shard) with a short ``http_request_head_timeout``; time ``GET /health`` on a
keep-alive connection for a few seconds (baseline); then open ``--slow`` sockets that send one header line
every ``--interval`` seconds (slowloris) and ``--idle`` sockets that send nothing, and keep timing
``/health`` until every one of them was ended by the server or the head timeout passed twice. Reports the
latencies of both phases, how many sockets the server ended, the longest time one was held, and the
router's CPU per held socket. Also times ``jsonlimits.loads_writable`` (the API's body parser) against a
bare ``orjson.loads`` on a small publish body and a 1,000-command batch.

    .venv/bin/python -m bench.slow_sockets_bench --slow 500 --idle 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import timeit
from pathlib import Path

import orjson

from bench.connections_bench import (
    BenchError,
    HttpClient,
    ServerProcess,
    cpu_seconds,
    git_commit,
    machine,
)
from bench.loadgen import percentile
from broker.jsonlimits import loads_writable


def health_latencies(port: int, stop: threading.Event, out: list[float]) -> None:
    with HttpClient(port) as client:
        while not stop.is_set():
            start = time.perf_counter()
            status, _ = client.request("GET", "/health")
            out.append(time.perf_counter() - start)
            if status != 200:
                raise BenchError(f"/health answered {status}")
            time.sleep(0.005)


async def hold(port: int, slow: bool, interval: float, give_up: float) -> float:
    """Open a socket, dribble a head (or nothing); seconds until the server ended it (inf if never)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    if slow:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    line = 0
    try:
        while time.monotonic() - opened < give_up:
            try:
                await asyncio.wait_for(reader.read(4096), interval)
                return time.monotonic() - opened  # an answer (408) or the end of the stream
            except TimeoutError:
                if slow:
                    writer.write(f"X-Slow-{line}: 1\r\n".encode())
                    line += 1
    except ConnectionError:
        return time.monotonic() - opened
    finally:
        writer.close()
    return float("inf")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def latency_rows(name: str, samples: list[float]) -> list[str]:
    ordered = sorted(samples)
    return [
        f"| /health {name} p50 | {ms(percentile(ordered, 0.5))} |",
        f"| /health {name} p99 | {ms(percentile(ordered, 0.99))} |",
        f"| /health {name} max | {ms(ordered[-1])} |",
        f"| /health {name} requests | {len(ordered):,} |",
    ]


def parser_rows() -> list[str]:
    publish = orjson.dumps({"channel": "chat:room", "data": {"text": "hello", "n": 1, "tags": ["a", "b"]}})
    batch = orjson.dumps({"commands": [{"publish": orjson.loads(publish)}] * 1000})
    rows = []
    for name, body, number in (("publish body", publish, 200_000), ("1,000-command batch", batch, 200)):
        bare = min(timeit.repeat(lambda b=body: orjson.loads(b), number=number, repeat=3)) / number
        checked = min(timeit.repeat(lambda b=body: loads_writable(b), number=number, repeat=3)) / number
        rows.append(
            f"| parse {name} ({len(body):,} B): orjson.loads → loads_writable | "
            f"{bare * 1e6:.2f} µs → {checked * 1e6:.2f} µs ({checked / bare:.2f}x) |"
        )
    return rows


def run(opts: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="slow-sockets-") as tmp:
        server = ServerProcess(Path(tmp), shards=1)
        config = orjson.loads(server.config_path.read_bytes())
        config.update(
            {
                "http_request_head_timeout": f"{opts.head_timeout}s",
                "http_max_pending_connections": opts.slow + opts.idle + 100,
            }
        )
        server.config_path.write_bytes(orjson.dumps(config))
        server.start()
        try:
            router = server.router_pid()
            baseline: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=health_latencies, args=(server.port, stop, baseline))
            thread.start()
            time.sleep(opts.baseline)
            stop.set()
            thread.join()

            held: list[float] = []
            stop = threading.Event()
            thread = threading.Thread(target=health_latencies, args=(server.port, stop, held))
            cpu_before = cpu_seconds(router)
            thread.start()

            async def all_sockets() -> list[float]:
                give_up = opts.head_timeout * 2 + 2
                return await asyncio.gather(
                    *(hold(server.port, True, opts.interval, give_up) for _ in range(opts.slow)),
                    *(hold(server.port, False, opts.interval, give_up) for _ in range(opts.idle)),
                )

            durations = asyncio.run(all_sockets())
            stop.set()
            thread.join()
            cpu = cpu_seconds(router) - cpu_before
        finally:
            server.stop()
    ended = [d for d in durations if d != float("inf")]
    rows = [
        "| metric | value |",
        "|---|---|",
        *latency_rows("baseline", baseline),
        *latency_rows(f"with {opts.slow + opts.idle:,} slow/idle sockets", held),
        f"| sockets ended by the server | {len(ended):,} of {len(durations):,} |",
        f"| longest held (head timeout {opts.head_timeout} s) | {max(ended, default=0):.2f} s |",
        f"| router CPU per held socket (incl. the /health requests meanwhile) | "
        f"{cpu / max(1, len(durations)) * 1e6:.0f} µs |",
        *parser_rows(),
    ]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = (
        f".venv/bin/python -m bench.slow_sockets_bench --slow {opts.slow} --idle {opts.idle} "
        f"--interval {opts.interval} --head-timeout {opts.head_timeout}"
    )
    return "\n".join(
        [
            f"### Slow and idle sockets, {when}, commit {git_commit()}",
            "",
            f"- machine: {machine()}; the sockets, the /health client and the server share the cores",
            f"- command: `{command}`",
            "",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=500, help="slowloris sockets")
    parser.add_argument("--idle", type=int, default=500, help="sockets that send nothing")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a slow socket's lines")
    parser.add_argument("--head-timeout", type=float, default=5.0, help="http_request_head_timeout")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of /health before the sockets")
    parser.add_argument("--append-results", action="store_true", help="append the report to RESULTS.md")
    opts = parser.parse_args(argv)
    text = run(opts)
    print(text)
    if opts.append_results:
        with open(Path(__file__).parent / "RESULTS.md", "a") as results:
            results.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
