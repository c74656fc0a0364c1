"""A trio load generator for recovery: WebSocket clients that subscribe, vanish, and come back at once.

One process holds connections ``start .. start+count-1`` (user ``u<k>``, its own HS256 token, source
address ``127.<net>.x.y``; the handshake and framing are :mod:`bench.ws_loadgen`'s). Every client
subscribes to one history channel with ``recoverable: true``.

The orchestrator (:mod:`bench.channel_features_bench`) drives it over stdin/stdout, one JSON object a line:

* ``{"event": "ready"}``; then ``go`` connects and subscribes every client (``concurrency`` at a time),
  keeps each stream position (offset, epoch) from its subscribe reply, answers pings, and prints
  ``{"event": "subscribed", ...}``;
* ``disconnect``: closes every socket (no close frame, like a dropped network) and prints
  ``{"event": "disconnected"}``;
* ``recover <n>``: at ``t0 = time.monotonic()`` every client reconnects at the same moment and subscribes
  with ``recover: true`` and its position. A client is *caught up* once it holds every one of the ``n``
  publications after its offset (from the subscribe reply's ``publications`` and any later pushes, without
  gaps). Prints ``{"event": "recovered", ...}`` with ``t0``, each client's time from ``t0`` to caught up,
  how many replies said ``recovered: true`` and what went wrong;
* ``stop`` (or EOF, or ``--hold-timeout``): closes everything and prints ``{"event": "closed"}``.
"""

from __future__ import annotations

import argparse
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

from bench.loadgen import emit, open_socket, percentile, read_commands
from bench.ws_loadgen import (
    PONG_PAYLOAD,
    ConnectFailed,
    Plan,
    build_connects,
    client_frame,
    connect_one,
    send_all,
    source_address,
    split_frames,
)

READ_SIZE = 262144


@dataclass
class Client:
    index: int
    offset: int = 0
    epoch: str = ""
    sock: socket.socket | None = None


@dataclass
class Catchup:
    """What one reconnecting client saw."""

    offsets: set[int] = field(default_factory=set)
    recovered: bool = False
    from_reply: int = 0
    from_pushes: int = 0
    done: float = math.nan


class Stream:
    """Complete JSON messages from a server's unmasked frames; answers pings on the way."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.buffer = leftover

    async def messages(self) -> list[dict[str, Any]]:
        while True:
            frames, self.buffer = split_frames(self.buffer)
            found: list[dict[str, Any]] = []
            for opcode, payload in frames:
                if opcode == 8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    raise ConnectFailed(f"close {code} {payload[2:60].decode(errors='replace')}")
                if opcode == 9:
                    await send_all(self.sock, bytes((0x8A, 0x80)) + os.urandom(4))
                    continue
                if opcode != 1:
                    continue
                for line in payload.split(b"\n"):
                    message = orjson.loads(line)
                    if not message:
                        await send_all(self.sock, client_frame(PONG_PAYLOAD))
                    else:
                        found.append(message)
            if found:
                return found
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectFailed("closed by the server")
            self.buffer += data


@dataclass
class State:
    plan: Plan
    channel: str
    clients: list[Client]
    connects: list[bytes]
    errors: Counter[str] = field(default_factory=Counter)
    subscribed: int = 0
    failed: int = 0


async def open_client(state: State, client: Client) -> Stream:
    plan = state.plan
    sock = open_socket(source_address(plan, client.index))
    try:
        leftover = await connect_one(plan, sock, client.index, state.connects[client.index - plan.start])
    except BaseException:
        sock.close()
        raise
    client.sock = sock
    return Stream(sock, leftover)


async def subscribe_and_hold(state: State, client: Client, limiter: trio.CapacityLimiter) -> None:
    try:
        async with limiter:
            with trio.fail_after(state.plan.connect_timeout):
                stream = await open_client(state, client)
                command = {"id": 2, "subscribe": {"channel": state.channel, "recoverable": True}}
                await send_all(stream.sock, client_frame(orjson.dumps(command)))
                reply = await wait_reply(stream)
        result = reply["subscribe"]
        client.offset = int(result.get("offset", 0))
        client.epoch = str(result["epoch"])
        state.subscribed += 1
    except (trio.TooSlowError, OSError, ConnectFailed, ValueError, KeyError) as exc:
        state.errors[f"subscribe: {type(exc).__name__}: {str(exc)[:60]}"] += 1
        state.failed += 1
        return
    with trio.move_on_after(state.plan.hold_timeout):
        try:
            while True:
                await stream.messages()  # pings are answered inside; publications are not expected
        except (OSError, ConnectFailed, ValueError):
            state.errors["ended while held"] += 1


async def wait_reply(stream: Stream) -> dict[str, Any]:
    while True:
        for message in await stream.messages():
            if message.get("id") == 2:
                if "error" in message:
                    raise ConnectFailed(f"subscribe error {message['error']}")
                return message
            if "push" not in message:
                raise ConnectFailed(f"unexpected message {str(message)[:60]}")


async def recover_one(state: State, client: Client, wanted: int, t0: float, seen: Catchup) -> None:
    last = client.offset + wanted
    try:
        with trio.fail_after(state.plan.connect_timeout * 2):
            stream = await open_client(state, client)
            request = {
                "channel": state.channel,
                "recoverable": True,
                "recover": True,
                "offset": client.offset,
                "epoch": client.epoch,
            }
            await send_all(stream.sock, client_frame(orjson.dumps({"id": 2, "subscribe": request})))
            replied = False
            while len(seen.offsets) < wanted or not replied:
                for message in await stream.messages():
                    if message.get("id") == 2:
                        if "error" in message:
                            raise ConnectFailed(f"subscribe error {message['error']}")
                        result = message["subscribe"]
                        replied = True
                        seen.recovered = bool(result.get("recovered"))
                        for pub in result.get("publications", ()):
                            seen.from_reply += 1
                            if client.offset < (offset := int(pub["offset"])) <= last:
                                seen.offsets.add(offset)
                    elif "push" in message:
                        pub = message["push"].get("pub")
                        if pub is not None and message["push"].get("channel") == state.channel:
                            seen.from_pushes += 1
                            if client.offset < (offset := int(pub["offset"])) <= last:
                                seen.offsets.add(offset)
        seen.done = time.monotonic() - t0
        client.offset = last  # the next round recovers from here
    except (trio.TooSlowError, OSError, ConnectFailed, ValueError, KeyError) as exc:
        state.errors[f"recover: {type(exc).__name__}: {str(exc)[:60]}"] += 1


def close_all(state: State) -> None:
    for client in state.clients:
        if client.sock is not None:
            client.sock.close()
            client.sock = None


async def run(plan: Plan, channel: str) -> None:
    clients = [Client(k) for k in range(plan.start, plan.start + plan.count)]
    state = State(plan, channel, clients, build_connects(plan))
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send, commands = trio.open_memory_channel[str](16)
    holders = trio.CancelScope()
    async with trio.open_nursery() as outer:
        outer.start_soon(read_commands, stdin, send)
        emit({"event": "ready", "pid": os.getpid()})
        with trio.move_on_after(plan.hold_timeout):
            while True:
                verb, _, argument = (await commands.receive()).partition(" ")
                if verb in ("stop", "eof"):
                    break
                if verb == "go":
                    state.errors.clear()
                    state.subscribed = state.failed = 0
                    began = time.monotonic()
                    holders = await outer.start(hold_all, state)
                    emit(
                        {
                            "event": "subscribed",
                            "subscribed": state.subscribed,
                            "seconds": time.monotonic() - began,
                            "errors": dict(state.errors.most_common(5)),
                            "epochs": sorted({c.epoch for c in clients}),
                            "offsets": sorted({c.offset for c in clients}),
                        }
                    )
                elif verb == "disconnect":
                    holders.cancel()
                    close_all(state)
                    emit({"event": "disconnected"})
                elif verb == "recover":
                    emit(await recover_all(state, int(argument)))
        close_all(state)
        outer.cancel_scope.cancel()
    emit({"event": "closed", "ended_early": state.errors["ended while held"]})


async def hold_all(state: State, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Connect and subscribe every client, report back (with the scope that ends the holding), hold."""
    limiter = trio.CapacityLimiter(state.plan.concurrency)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            for client in state.clients:
                nursery.start_soon(subscribe_and_hold, state, client, limiter)
            deadline = time.monotonic() + state.plan.connect_timeout + len(state.clients) / 50
            while state.subscribed + state.failed < len(state.clients) and time.monotonic() < deadline:
                await trio.sleep(0.01)
            task_status.started(scope)


async def recover_all(state: State, wanted: int) -> dict[str, Any]:
    state.errors.clear()
    seen = [Catchup() for _ in state.clients]
    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for client, catchup in zip(state.clients, seen, strict=True):
            nursery.start_soon(recover_one, state, client, wanted, t0, catchup)
    times = sorted(c.done for c in seen if not math.isnan(c.done))
    return {
        "event": "recovered",
        "t0": t0,
        "clients": len(seen),
        "caught_up": len(times),
        "recovered_true": sum(c.recovered for c in seen),
        "complete": sum(len(c.offsets) == wanted for c in seen),
        "from_reply": sum(c.from_reply for c in seen),
        "from_pushes": sum(c.from_pushes for c in seen),
        "p50": percentile(times, 0.5),
        "p99": percentile(times, 0.99),
        "first": times[0] if times else math.nan,
        "last": times[-1] if times else math.nan,
        "errors": dict(state.errors.most_common(5)),
    }


def parse_args(argv: list[str] | None = None) -> tuple[Plan, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--channel", required=True, help="a channel of a namespace with history")
    parser.add_argument("--start", type=int, default=0, help="index of the first connection")
    parser.add_argument("--count", type=int, required=True, help="clients (≤ 10,000)")
    parser.add_argument("--net", type=int, default=1, help="source addresses are 127.<net>.x.y")
    parser.add_argument("--per-address", type=int, default=100, help="sockets per source address")
    parser.add_argument("--concurrency", type=int, default=200, help="first connects in flight")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--hold-timeout", type=float, default=600.0, help="run at most this long")
    args = parser.parse_args(argv)
    if not 1 <= args.net <= 254:
        parser.error("--net must be in 1..254")
    plan = Plan(
        target="switchboard",
        port=args.port,
        secret=args.secret,
        start=args.start,
        count=args.count,
        net=args.net,
        per_address=args.per_address,
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        hold_timeout=args.hold_timeout,
        rungs=[],
    )
    return plan, args.channel


def main(argv: list[str] | None = None) -> None:
    plan, channel = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if plan.count > 10_000 or 2 * plan.count + 64 > hard:
        raise SystemExit(f"{plan.count} clients: at most 10,000 (open-file limit {hard})")
    trio.run(run, plan, channel)


if __name__ == "__main__":
    main()
