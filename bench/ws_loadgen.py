"""A trio load generator for WebSocket fan-out: many subscribers, counting deliveries and their latency.

One process opens connections ``start .. start+count-1`` (at most 18,000) to one server, either
Switchboard (``--target switchboard``: upgrade at ``/connection/websocket``, ``connect`` command with its
own HS256 token, later ``subscribe`` commands) or the bare ceiling server (``--target ceiling``, see
:mod:`bench.ceiling_server`: the upgrade request names the connection's channels in its query string).
Sockets are bound to ``127.<net>.<a>.<b>`` (``per_address`` per address) and go to ``127.0.0.1``.

Which channels connection ``k`` joins is fixed by the rungs (``--rungs``, JSON ``[[name, subscribers,
channels], ...]``): a rung of S subscribers on one channel is channel ``name`` for ``k < S``; a rung of S
subscribers over C channels is channel ``name-<k % C>`` for ``k < S``.

Every publication carries ``{"t": time.monotonic() at publish, "b": burst, "i": index in burst}``
(``time.monotonic()`` is CLOCK_MONOTONIC, one clock for every process of the machine). Once connected,
every socket is registered in one ``epoll`` object and a single trio task waits for that epoll descriptor
to become readable, then drains every ready socket: one wake-up per batch of ready sockets rather than a
task switch per socket, so that the generator costs as little CPU as possible next to the servers it
measures. Server pings (``{}``) are answered with pongs.

The orchestrator (:mod:`bench.fanout_bench`) drives it over stdin/stdout, one JSON object per line:

* ``{"event": "ready"}`` once tokens are built; then ``go`` on stdin opens every connection (at most
  ``concurrency`` at once) and prints ``{"event": "connected", ...}`` with connect timings;
* ``subscribe``: sends each connection's subscribe commands and prints ``{"event": "subscribed"}`` when
  every reply is in (the ceiling has nothing to subscribe: it answers at once);
* ``phase <json>`` with ``{"channels": [...], "per_burst": n}``: resets the counters, computes how many
  deliveries a burst brings to this process, prints ``{"event": "armed", "expect": n}``; then prints
  ``{"event": "burst", "b": b}`` each time burst ``b`` is complete here;
* ``report <path>``: writes every latency of the phase (float64, seconds) to ``path`` and prints
  ``{"event": "report", ...}`` with the counts and the last receive time per burst;
* ``stop`` (or EOF, or ``--hold-timeout``): closes every socket and prints ``{"event": "closed", ...}``.
"""

from __future__ import annotations

import argparse
import array
import base64
import math
import os
import resource
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
from websockets.speedups import apply_mask

from bench.loadgen import emit, longest_gap, open_socket, per_interval, percentile, read_commands
from broker.auth import encode_token

READ_SIZE = 262144
# Below the open-file limit of 20,000 with room for the process's own descriptors.
MAX_SOCKETS = 18_000
PONG_PAYLOAD = b"{}"


class ConnectFailed(Exception):
    """The server refused the upgrade or answered the connect command with something else."""


@dataclass
class Plan:
    target: str
    port: int
    secret: str
    start: int
    count: int
    net: int
    per_address: int
    concurrency: int
    connect_timeout: float
    hold_timeout: float
    rungs: list[tuple[str, int, int]]
    setup_timeout: float = 0.0  # 0: from the count


@dataclass
class Conn:
    sock: socket.socket
    index: int
    channels: list[str]
    buffer: bytes = b""


@dataclass
class Phase:
    expect: int = 0
    counts: Counter[int] = field(default_factory=Counter)
    last: dict[int, float] = field(default_factory=dict)
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    done: set[int] = field(default_factory=set)
    bytes_received: int = 0
    reads: int = 0
    wakeups: int = 0


@dataclass
class State:
    conns: dict[int, Conn] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0
    ended_early: int = 0
    last_done: float = 0.0
    all_done: trio.Event = field(default_factory=trio.Event)
    replies_wanted: int = 0
    replies: int = 0
    reply_errors: Counter[str] = field(default_factory=Counter)
    subscribed: trio.Event = field(default_factory=trio.Event)
    pings: int = 0
    unexpected: int = 0
    endings: Counter[str] = field(default_factory=Counter)
    other_pushes: Counter[str] = field(default_factory=Counter)
    phase: Phase = field(default_factory=Phase)


def channels_of(rungs: list[tuple[str, int, int]], k: int) -> list[str]:
    found = []
    for name, subscribers, channels in rungs:
        if k < subscribers:
            found.append(name if channels == 1 else f"{name}-{k % channels}")
    return found


def source_address(plan: Plan, k: int) -> str:
    slot = (k - plan.start) // plan.per_address
    return f"127.{plan.net}.{slot // 250}.{slot % 250 + 1}"


def client_frame(payload: bytes) -> bytes:
    """A masked text frame, as a client must send."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    elif size < 65536:
        head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + apply_mask(payload, mask)


def upgrade_request(plan: Plan, k: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    if plan.target == "ceiling":
        path = "/ws?channels=" + ",".join(channels_of(plan.rungs, k))
    else:
        path = "/connection/websocket"
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("latin-1")


def build_connects(plan: Plan) -> list[bytes]:
    if plan.target == "ceiling":
        return [b""] * plan.count
    expires = int(time.time()) + 3600
    frames = []
    for k in range(plan.start, plan.start + plan.count):
        token = encode_token({"sub": f"u{k}", "exp": expires}, plan.secret)
        frames.append(client_frame(orjson.dumps({"id": 1, "connect": {"token": token, "name": "bench"}})))
    return frames


async def send_all(sock: socket.socket, data: bytes) -> None:
    sent = 0
    while sent < len(data):
        try:
            sent += sock.send(data[sent:])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


async def receive(sock: socket.socket) -> bytes:
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            continue
        if not data:
            raise ConnectFailed("closed during setup")
        return data


async def connect_one(plan: Plan, sock: socket.socket, k: int, connect: bytes) -> bytes:
    """Upgrade, then (Switchboard) send the connect command and read up to its reply; the bytes left over."""
    try:
        sock.connect(("127.0.0.1", plan.port))
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error)) from None
    await send_all(sock, upgrade_request(plan, k))
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        buffer += await receive(sock)
    status = buffer[: buffer.find(b"\r\n")]
    if b" 101 " not in status + b" ":
        raise ConnectFailed(f"status {status[:40]!r}")
    buffer = buffer[end + 4 :]
    if not connect:
        return buffer
    await send_all(sock, connect)
    while True:
        frames, rest = split_frames(buffer)
        if frames:
            opcode, payload = frames[0]
            first = orjson.loads(payload.split(b"\n", 1)[0]) if opcode == 1 else {}
            if "connect" not in first:
                raise ConnectFailed(f"first reply was not a connect reply: {payload[:80]!r}")
            return b"".join(_reframe(f) for f in frames[1:]) + rest
        buffer += await receive(sock)


def _reframe(frame: tuple[int, bytes]) -> bytes:
    opcode, payload = frame
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked server frames in ``data`` as (opcode, payload), and the incomplete rest."""
    frames = []
    pos = 0
    end = len(data)
    while end - pos >= 2:
        size = data[pos + 1] & 0x7F
        head = 2
        if size == 126:
            if end - pos < 4:
                break
            size = int.from_bytes(data[pos + 2 : pos + 4], "big")
            head = 4
        elif size == 127:
            if end - pos < 10:
                break
            size = int.from_bytes(data[pos + 2 : pos + 10], "big")
            head = 10
        stop = pos + head + size
        if stop > end:
            break
        frames.append((data[pos] & 0x0F, data[pos + head : stop]))
        pos = stop
    return frames, data[pos:]


# -- the receive loop -----------------------------------------------------------------------------------


def handle(state: State, conn: Conn, data: bytes, now: float) -> None:
    if conn.buffer:
        data = conn.buffer + data
    frames, conn.buffer = split_frames(data)
    phase = state.phase
    phase.bytes_received += len(data) - len(conn.buffer)
    loads = orjson.loads
    for opcode, payload in frames:
        if opcode == 1:
            for line in payload.split(b"\n"):
                message = loads(line)
                push = message.get("push")
                if push is not None:
                    pub = push.get("pub")
                    if pub is not None:
                        record(state, pub["data"], now)
                    else:
                        state.unexpected += 1
                        state.other_pushes[",".join(sorted(push))[:60]] += 1
                elif "t" in message:
                    record(state, message, now)  # the ceiling's frames are the data itself
                elif not message:
                    state.pings += 1
                    send_small(conn.sock, client_frame(PONG_PAYLOAD))
                elif "id" in message and message["id"] > 1:
                    state.replies += 1
                    if "error" in message:
                        state.reply_errors[str(message["error"].get("code"))] += 1
                    if state.replies >= state.replies_wanted:
                        state.subscribed.set()
                else:
                    state.unexpected += 1
        elif opcode == 9:
            send_small(conn.sock, bytes((0x8A, 0x80)) + os.urandom(4))  # pong, empty payload
        elif opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            raise ConnectionError(f"close {code} {payload[2:40].decode(errors='replace')}")


def send_small(sock: socket.socket, data: bytes) -> None:
    """A few bytes on an idle socket: its send buffer has room, so one non-blocking send takes them."""
    try:
        sock.send(data)
    except BlockingIOError:
        pass


def record(state: State, data: dict[str, Any], now: float) -> None:
    phase = state.phase
    burst = data["b"]
    if burst:  # burst 0 is the warm-up
        phase.latencies.append(now - data["t"])
    phase.counts[burst] += 1
    phase.last[burst] = now
    if phase.counts[burst] == phase.expect:
        phase.done.add(burst)
        emit({"event": "burst", "b": burst})


async def receive_loop(state: State, poller: select.epoll) -> None:
    fd = poller.fileno()
    conns = state.conns
    while True:
        await trio.lowlevel.wait_readable(fd)
        # Drain until nothing is ready, without a trip through trio's scheduler per batch; a few rounds
        # at most, so that commands on stdin are not starved during a long burst.
        for _ in range(8):
            ready = poller.poll(0, 4096)
            if not ready:
                break
            state.phase.wakeups += 1
            for sock_fd, _ in ready:
                conn = conns.get(sock_fd)
                if conn is None:
                    continue
                try:
                    data = conn.sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                state.phase.reads += 1
                try:
                    if not data:
                        raise ConnectionError("closed")
                    handle(state, conn, data, time.monotonic())
                except (ConnectionError, OSError, ValueError, KeyError, TypeError) as exc:
                    state.ended_early += 1
                    state.endings[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                    poller.unregister(sock_fd)
                    del conns[sock_fd]
                    conn.sock.close()
        await trio.lowlevel.checkpoint()


# -- setup ----------------------------------------------------------------------------------------------


async def worker(
    plan: Plan, state: State, queue: list[int], connects: list[bytes], poller: select.epoll
) -> None:
    while queue:
        k = queue.pop()
        began = time.monotonic()
        error: str | None = None
        sock: socket.socket | None = None
        rest = b""
        try:
            sock = open_socket(source_address(plan, k))
            with trio.fail_after(plan.connect_timeout):
                rest = await connect_one(plan, sock, k, connects[k - plan.start])
        except trio.TooSlowError:
            error = "timeout"
        except (OSError, ConnectFailed, ValueError) as exc:
            error = type(exc).__name__ + ": " + str(exc)[:80]
        now = time.monotonic()
        if error is None and sock is not None:
            state.latencies.append(now - began)
            conn = Conn(sock, k, channels_of(plan.rungs, k))
            state.conns[sock.fileno()] = conn
            poller.register(sock.fileno(), select.EPOLLIN)
            if rest:
                handle(state, conn, rest, now)
        else:
            state.errors[error or "unknown"] += 1
            if sock is not None:
                sock.close()
        state.done += 1
        state.finished.append(now)
        state.last_done = now
        if state.done == plan.count:
            state.all_done.set()


async def subscribe_all(plan: Plan, state: State) -> None:
    if plan.target == "ceiling":
        return
    frames: list[tuple[Conn, bytes]] = []
    wanted = 0
    for conn in state.conns.values():
        commands = [
            orjson.dumps({"id": i + 2, "subscribe": {"channel": channel}})
            for i, channel in enumerate(conn.channels)
        ]
        if commands:
            frames.append((conn, client_frame(b"\n".join(commands))))
            wanted += len(commands)
    state.replies_wanted = wanted
    if wanted == 0:
        return
    for conn, frame in frames:
        await send_all(conn.sock, frame)
    # Until every reply is in, or the whole time is up, or no reply came for a while (connections the
    # server ended owe theirs for ever: the report counts them).
    deadline = trio.current_time() + (plan.setup_timeout or plan.connect_timeout + len(frames) / 200)
    seen = state.replies
    while not state.subscribed.is_set() and trio.current_time() < deadline:
        with trio.move_on_after(min(plan.connect_timeout, deadline - trio.current_time())):
            await state.subscribed.wait()
        if state.replies == seen:
            break
        seen = state.replies


def arm(state: State, spec: dict[str, Any]) -> int:
    channels = set(spec["channels"])
    per_burst = int(spec["per_burst"])
    expect = sum(per_burst * len(channels.intersection(c.channels)) for c in state.conns.values())
    state.phase = Phase(expect=expect)
    return expect


def write_report(state: State, path: str) -> dict[str, Any]:
    phase = state.phase
    with open(path, "wb") as out:
        phase.latencies.tofile(out)
    return {
        "event": "report",
        "expect": phase.expect,
        "counts": {str(b): n for b, n in phase.counts.items()},
        "last": {str(b): t for b, t in phase.last.items()},
        "complete": len(phase.done),
        "bytes": phase.bytes_received,
        "reads": phase.reads,
        "wakeups": phase.wakeups,
        "pings": state.pings,
        "unexpected": state.unexpected,
        "ended_early": state.ended_early,
        "endings": dict(state.endings.most_common(5)),
        "other_pushes": dict(state.other_pushes.most_common(5)),
    }


async def run(plan: Plan) -> None:
    connects = build_connects(plan)
    state = State()
    poller = select.epoll()
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send, commands = trio.open_memory_channel[str](64)
    async with trio.open_nursery() as outer:
        outer.start_soon(read_commands, stdin, send)
        emit({"event": "ready", "pid": os.getpid()})
        if await commands.receive() != "go":
            outer.cancel_scope.cancel()
            return
        outer.start_soon(receive_loop, state, poller)
        queue = list(range(plan.start + plan.count - 1, plan.start - 1, -1))  # popped from the end
        began = time.monotonic()
        async with trio.open_nursery() as setup:
            for _ in range(min(plan.concurrency, plan.count)):
                setup.start_soon(worker, plan, state, queue, connects, poller)
            with trio.move_on_after(plan.setup_timeout or plan.connect_timeout * 2 + plan.count / 100):
                await state.all_done.wait()
            setup.cancel_scope.cancel()
        latencies = sorted(state.latencies)
        emit(
            {
                "event": "connected",
                "connected": len(state.conns),
                "failed": plan.count - len(state.conns),
                "errors": dict(state.errors.most_common(5)),
                "began": began,
                "last_done": state.last_done,
                "latency_p50": percentile(latencies, 0.5),
                "latency_p99": percentile(latencies, 0.99),
                "longest_gap": longest_gap(began, state.finished),
                "per_100ms": per_interval(began, state.finished, 0.1),
            }
        )
        with trio.move_on_after(plan.hold_timeout):
            while True:
                command = await commands.receive()
                verb, _, argument = command.partition(" ")
                if verb in ("stop", "eof"):
                    break
                if verb == "subscribe":
                    await subscribe_all(plan, state)
                    emit(
                        {
                            "event": "subscribed",
                            "wanted": state.replies_wanted,
                            "replies": state.replies,
                            "errors": dict(state.reply_errors),
                        }
                    )
                elif verb == "phase":
                    emit({"event": "armed", "expect": arm(state, orjson.loads(argument))})
                elif verb == "report":
                    emit(write_report(state, argument))
        ended_early = state.ended_early
        for conn in state.conns.values():
            conn.sock.close()
        poller.close()
        outer.cancel_scope.cancel()
    emit(
        {
            "event": "closed",
            "ended_early": ended_early,
            "pings": state.pings,
            "endings": dict(state.endings.most_common(5)),
            "other_pushes": dict(state.other_pushes.most_common(5)),
        }
    )


def parse_args(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("switchboard", "ceiling"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default="")
    parser.add_argument("--start", type=int, default=0, help="index of the first connection")
    parser.add_argument("--count", type=int, required=True, help="connections to open (≤ 18,000)")
    parser.add_argument("--net", type=int, default=1, help="source addresses are 127.<net>.x.y")
    parser.add_argument("--per-address", type=int, default=100, help="sockets per source address")
    parser.add_argument("--concurrency", type=int, default=200, help="connections being set up at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--hold-timeout", type=float, default=900.0, help="hold sockets at most this long")
    parser.add_argument(
        "--setup-timeout",
        type=float,
        default=0.0,
        help="all connects (or subscribes) within this; 0: from --count",
    )
    parser.add_argument("--rungs", required=True, help='JSON: [["name", subscribers, channels], ...]')
    args = parser.parse_args(argv)
    if not 1 <= args.net <= 254:
        parser.error("--net must be in 1..254")
    return Plan(
        target=args.target,
        port=args.port,
        secret=args.secret,
        start=args.start,
        count=args.count,
        net=args.net,
        per_address=args.per_address,
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        hold_timeout=args.hold_timeout,
        setup_timeout=args.setup_timeout,
        rungs=[(str(n), int(s), int(c)) for n, s, c in orjson.loads(args.rungs)],
    )


def main(argv: list[str] | None = None) -> None:
    plan = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if plan.count + 64 > hard or plan.count > MAX_SOCKETS:
        raise SystemExit(
            f"{plan.count} sockets: at most {MAX_SOCKETS:,} per generator (open-file limit {hard})"
        )
    if not math.isfinite(plan.hold_timeout):
        raise SystemExit("--hold-timeout must be finite")
    trio.run(run, plan)


if __name__ == "__main__":
    main()
