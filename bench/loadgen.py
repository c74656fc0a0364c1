"""A trio load generator: opens many ``uni_http_stream`` connections and holds them open.

One process opens connections ``start .. start+count-1``; connection ``k`` belongs to user
``str(k % users)`` and carries its own HS256 token. Sockets are bound to source addresses
``127.<net>.<a>.<b>`` (``per_address`` sockets per address) so that no address pair runs short of
ephemeral ports; every connection goes to ``127.0.0.1:<port>``.

The orchestrator (:mod:`bench.connections_bench`) drives it over stdin/stdout, one JSON object per line:

* it prints ``{"event": "ready"}`` once tokens are built, then waits for ``go`` on stdin;
* it opens every connection (at most ``concurrency`` being set up at once) and waits, per connection,
  for the ``connect`` push; then it writes ``{client id: user}`` to ``--out`` and prints
  ``{"event": "connected", ...}`` with its timings (``time.monotonic()``, comparable across processes);
* it holds the streams open, reading pings, until ``stop`` (or EOF) on stdin or ``--hold-timeout``;
  then it closes every socket and prints ``{"event": "closed", "ended_early": n}``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import resource
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from broker.auth import encode_token

READ_SIZE = 65536
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


class ConnectFailed(Exception):
    """The server answered the connect request with something other than a connect push."""


@dataclass
class Plan:
    port: int
    secret: str
    start: int
    count: int
    users: int
    net: int
    per_address: int
    concurrency: int
    connect_timeout: float
    hold_timeout: float
    out: str
    name: str = "bench"
    no_token: bool = False  # the connect proxy's backend names the user (from the app name)


@dataclass
class State:
    clients: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    ended_early: int = 0
    first_done: float = 0.0
    last_done: float = 0.0
    all_done: trio.Event = field(default_factory=trio.Event)


def source_address(plan: Plan, k: int) -> str:
    slot = (k - plan.start) // plan.per_address
    return f"127.{plan.net}.{slot // 250}.{slot % 250 + 1}"


def build_requests(plan: Plan) -> list[bytes]:
    expires = int(time.time()) + 3600
    requests = []
    for k in range(plan.start, plan.start + plan.count):
        if plan.no_token:
            body = orjson.dumps({"name": plan.name, "data": {"user": str(k % plan.users)}})
        else:
            token = encode_token({"sub": str(k % plan.users), "exp": expires, "jti": str(k)}, plan.secret)
            body = orjson.dumps({"token": token, "name": plan.name})
        head = (
            "POST /connection/uni_http_stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode("latin-1") + body)
    return requests


def parse_first_message(buffer: bytes) -> dict[str, Any] | None:
    """The first message of a chunked JSON stream, or None while more bytes are needed."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line = buffer[: buffer.find(b"\r\n")]
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != b"200":
        raise ConnectFailed(f"status {status_line[:40]!r}")
    rest = buffer[end + 4 :]
    line_end = rest.find(b"\r\n")
    if line_end < 0:
        return None
    size = int(rest[:line_end], 16)
    if size == 0:
        raise ConnectFailed("stream ended before the connect push")
    chunk = rest[line_end + 2 : line_end + 2 + size]
    if len(chunk) < size:
        return None
    first = chunk.split(b"\n", 1)[0]
    message: dict[str, Any] = orjson.loads(first)
    return message


def open_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    # The port is picked at connect() for the whole 4-tuple, not at bind() for the address alone.
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))
    return sock


async def connect_one(plan: Plan, sock: socket.socket, request: bytes) -> dict[str, Any]:
    """Connect, send the request and read up to the first message, with trio's readiness waits."""
    try:
        sock.connect(("127.0.0.1", plan.port))
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error)) from None
    sent = 0
    while sent < len(request):
        try:
            sent += sock.send(request[sent:])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
    buffer = b""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            continue
        if not data:
            raise ConnectFailed("closed before the connect push")
        buffer += data
        message = parse_first_message(buffer)
        if message is not None:
            return message


async def hold(state: State, sock: socket.socket) -> None:
    """Keep a connected stream open, reading its pings, until cancelled or the server ends it."""
    try:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                state.ended_early += 1
                return
    except OSError:
        state.ended_early += 1
    finally:
        sock.close()


async def worker(
    plan: Plan, state: State, queue: list[int], requests: list[bytes], holders: trio.Nursery
) -> None:
    """Set up connections one at a time, taking the next index from ``queue``; hand each to a holder."""
    while queue:
        k = queue.pop()
        began = time.monotonic()
        error: str | None = None
        sock: socket.socket | None = None
        try:
            sock = open_socket(source_address(plan, k))
            with trio.fail_after(plan.connect_timeout):
                message = await connect_one(plan, sock, requests[k - plan.start])
            connect = message.get("connect")
            if not isinstance(connect, dict) or "client" not in connect:
                raise ConnectFailed(f"first message was not a connect push: {sorted(message)}")
        except trio.TooSlowError:
            error = "timeout"
        except (OSError, ConnectFailed, ValueError) as exc:
            error = type(exc).__name__ + ": " + str(exc)[:80]
        now = time.monotonic()
        if error is None and sock is not None:
            state.latencies.append(now - began)
            state.clients[connect["client"]] = str(k % plan.users)
            holders.start_soon(hold, state, sock)
        else:
            state.errors[error or "unknown"] += 1
            if sock is not None:
                sock.close()
        state.done += 1
        state.finished.append(now)
        state.first_done = state.first_done or now
        state.last_done = now
        if state.done == plan.count:
            state.all_done.set()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[rank]


def longest_gap(began: float, finished: list[float]) -> float:
    """The longest time during which no connection finished setting up."""
    times = [began, *finished]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def per_interval(began: float, finished: list[float], width: float) -> list[int]:
    counts: list[int] = []
    for t in finished:
        slot = int((t - began) / width)
        counts.extend([0] * (slot + 1 - len(counts)))
        counts[slot] += 1
    return counts


def emit(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


async def read_commands(stdin: trio.lowlevel.FdStream, commands: trio.MemorySendChannel[str]) -> None:
    buffer = b""
    while True:
        data = await stdin.receive_some(4096)
        if not data:
            await commands.send("eof")
            return
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            await commands.send(line.decode().strip())


async def run(plan: Plan) -> None:
    requests = build_requests(plan)
    state = State()
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send, receive = trio.open_memory_channel[str](16)
    async with trio.open_nursery() as outer:
        outer.start_soon(read_commands, stdin, send)
        emit({"event": "ready", "pid": os.getpid()})
        if await receive.receive() != "go":
            outer.cancel_scope.cancel()
            return
        queue = list(range(plan.start + plan.count - 1, plan.start - 1, -1))  # popped from the end
        began = time.monotonic()
        async with trio.open_nursery() as conns:
            for _ in range(min(plan.concurrency, plan.count)):
                conns.start_soon(worker, plan, state, queue, requests, conns)
            with trio.move_on_after(plan.connect_timeout * 2 + plan.count / 100):
                await state.all_done.wait()
            latencies = sorted(state.latencies)
            with open(plan.out, "wb") as out:
                out.write(orjson.dumps(state.clients))
            emit(
                {
                    "event": "connected",
                    "connected": len(state.clients),
                    "failed": sum(state.errors.values()),
                    "errors": dict(state.errors.most_common(5)),
                    "began": began,
                    "first_done": state.first_done,
                    "last_done": state.last_done,
                    "latency_p50": percentile(latencies, 0.5),
                    "latency_p99": percentile(latencies, 0.99),
                    "latency_max": latencies[-1] if latencies else math.nan,
                    "longest_gap": longest_gap(began, state.finished),
                    "per_100ms": per_interval(began, state.finished, 0.1),
                }
            )
            with trio.move_on_after(plan.hold_timeout):
                while (await receive.receive()) not in ("stop", "eof"):
                    pass
            ended_early = state.ended_early
            conns.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    emit({"event": "closed", "ended_early": ended_early})


def parse_args(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--start", type=int, default=0, help="index of the first connection")
    parser.add_argument("--count", type=int, required=True, help="connections to open (at most ~19,000)")
    parser.add_argument("--users", type=int, required=True, help="connection k belongs to user k %% users")
    parser.add_argument("--net", type=int, default=1, help="source addresses are 127.<net>.x.y")
    parser.add_argument("--per-address", type=int, default=100, help="sockets per source address")
    parser.add_argument("--concurrency", type=int, default=200, help="connections being set up at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--hold-timeout", type=float, default=600.0, help="hold streams at most this long")
    parser.add_argument("--no-token", action="store_true", help="no token: the connect proxy names the user")
    parser.add_argument("--out", required=True, help="where to write the {client id: user} map")
    args = parser.parse_args(argv)
    if not 1 <= args.net <= 254:
        parser.error("--net must be in 1..254")
    return Plan(
        port=args.port,
        secret=args.secret,
        start=args.start,
        count=args.count,
        users=args.users,
        net=args.net,
        per_address=args.per_address,
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        hold_timeout=args.hold_timeout,
        out=args.out,
        no_token=args.no_token,
    )


def main(argv: list[str] | None = None) -> None:
    plan = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if plan.count + 64 > hard:
        raise SystemExit(f"{plan.count} sockets do not fit under the open-file limit {hard}")
    trio.run(run, plan)


if __name__ == "__main__":
    main()
