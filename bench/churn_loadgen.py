"""A trio load generator of short-lived WebSocket clients: connect → subscribe → publish → close.

Cycle ``k`` is one whole client life: a TCP connection from ``127.<net>.a.b`` (the source address
rotates over ``--addresses`` addresses so that the sockets the server leaves in TIME_WAIT spread over
many 4-tuples), the WebSocket upgrade, a ``connect`` command with user ``u<k % users>``'s HS256 token,
a ``subscribe`` to channel ``churn-<k % channels>``, then (``--refused``, on by default) the same subscribe
again, which must be answered with error 105 "already subscribed" — clients do meet error replies, and
their code paths must not keep anything either — then a ``publish`` of ``{"k": k}`` to the channel, and
once the publish reply *and* the publication's push arrived, a close frame with 1000, the server's close
frame back, and the socket closed. Server pings (``{}``) met on the way are answered.

The orchestrator (:mod:`bench.churn_bench`) drives it over stdin/stdout, one JSON object per line:

* ``{"event": "ready"}`` at start;
* ``run <start> <count>`` runs cycles ``start .. start+count-1``, ``--concurrency`` at a time, and prints
  ``{"event": "ran", "cycles": n, "ok": n, "failed": n, "errors": {...}, "closes": {code: n}, ...}``;
* ``stop`` (or EOF) exits.

Every step has a timeout (``--step-timeout``); a cycle that fails is counted with its reason and its
socket closed, and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from bench.loadgen import emit, open_socket, percentile, read_commands
from bench.ws_loadgen import Plan, client_frame, connect_one, send_all, split_frames
from broker.auth import encode_token

READ_SIZE = 65536


def close_frame(code: int) -> bytes:
    """A masked close frame with ``code`` and no reason, as a client must send."""
    frame = bytearray(client_frame(code.to_bytes(2, "big")))
    frame[0] = 0x88  # FIN + close, instead of the text opcode client_frame writes
    return bytes(frame)


class CycleFailed(Exception):
    """The server ended the connection or answered something unexpected; the text says what."""


@dataclass
class Options:
    port: int
    secret: str
    net: int
    addresses: int
    users: int
    channels: int
    concurrency: int
    step_timeout: float
    refused: bool


@dataclass
class Totals:
    ok: int = 0
    failed: int = 0
    pings: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)


class Client:
    """One cycle's socket and the messages read from it."""

    def __init__(self, sock: socket.socket, buffer: bytes) -> None:
        self.sock = sock
        self.buffer = buffer
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.pings = 0

    async def read_more(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not data:
                raise CycleFailed("connection closed without a close frame")
            self.buffer += data
            return

    def parse(self) -> None:
        frames, self.buffer = split_frames(self.buffer)
        for opcode, payload in frames:
            if opcode == 1:
                for line in payload.split(b"\n"):
                    message = orjson.loads(line)
                    if message:
                        self.messages.append(message)
                    else:
                        self.pings += 1
                        self.sock.send(client_frame(b"{}"))  # a few bytes on an idle socket
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            elif opcode == 9:
                self.sock.send(bytes((0x8A, 0x80)) + os.urandom(4))

    async def wait_for(self, wanted: set[str]) -> None:
        """Until a message for each of ``wanted`` ("reply 2", "error 4 105", "pub") was read."""
        while True:
            self.parse()
            for message in self.messages:
                if "error" in message:
                    expected = f"error {message.get('id')} {message['error'].get('code')}"
                    if expected not in wanted:
                        raise CycleFailed(f"error reply {message['error'].get('code')}")
                    wanted.discard(expected)
                if "push" in message and "pub" in message["push"]:
                    wanted.discard("pub")
                elif "push" in message and "disconnect" in message["push"]:
                    raise CycleFailed(f"disconnect push {message['push']['disconnect'].get('code')}")
                elif "id" in message:
                    wanted.discard(f"reply {message['id']}")
            self.messages.clear()
            if not wanted:
                return
            if self.close_code is not None:
                raise CycleFailed(f"closed by the server with {self.close_code}")
            await self.read_more()


def source_address(opts: Options, k: int) -> str:
    slot = k % opts.addresses
    return f"127.{opts.net}.{slot // 250}.{slot % 250 + 1}"


async def cycle(opts: Options, plan: Plan, tokens: list[str], k: int, totals: Totals) -> None:
    began = time.monotonic()
    sock = open_socket(source_address(opts, k))
    try:
        with trio.fail_after(opts.step_timeout):
            connect = client_frame(
                orjson.dumps({"id": 1, "connect": {"token": tokens[k % opts.users], "name": "churn"}})
            )
            client = Client(sock, await connect_one(plan, sock, k, connect))
            channel = f"churn-{k % opts.channels}"
            await send_all(sock, client_frame(orjson.dumps({"id": 2, "subscribe": {"channel": channel}})))
            await client.wait_for({"reply 2"})
            if opts.refused:
                await send_all(sock, client_frame(orjson.dumps({"id": 4, "subscribe": {"channel": channel}})))
                await client.wait_for({"error 4 105"})
            publish = {"id": 3, "publish": {"channel": channel, "data": {"k": k}}}
            await send_all(sock, client_frame(orjson.dumps(publish)))
            await client.wait_for({"reply 3", "pub"})
            await send_all(sock, close_frame(1000))
            while client.close_code is None:
                await client.read_more()
                client.parse()
        totals.closes[str(client.close_code)] += 1
        totals.pings += client.pings
        totals.ok += 1
        totals.durations.append(time.monotonic() - began)
    except trio.TooSlowError:
        totals.failed += 1
        totals.errors["timeout"] += 1
    except (OSError, CycleFailed, ValueError, KeyError) as exc:
        totals.failed += 1
        totals.errors[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
    finally:
        sock.close()


async def run_cycles(opts: Options, plan: Plan, tokens: list[str], start: int, count: int) -> dict[str, Any]:
    totals = Totals()
    pending = list(range(start + count - 1, start - 1, -1))  # popped from the end: in order

    async def worker() -> None:
        while pending:
            await cycle(opts, plan, tokens, pending.pop(), totals)

    began = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(min(opts.concurrency, count)):
            nursery.start_soon(worker)
    elapsed = time.monotonic() - began
    durations = sorted(totals.durations)
    return {
        "event": "ran",
        "cycles": count,
        "ok": totals.ok,
        "failed": totals.failed,
        "errors": dict(totals.errors.most_common(5)),
        "closes": dict(totals.closes),
        "pings": totals.pings,
        "elapsed": elapsed,
        "cycle_p50": percentile(durations, 0.5),
        "cycle_p99": percentile(durations, 0.99),
    }


async def run(opts: Options) -> None:
    expires = int(time.time()) + 24 * 3600
    tokens = [encode_token({"sub": f"u{u}", "exp": expires}, opts.secret) for u in range(opts.users)]
    plan = Plan("switchboard", opts.port, opts.secret, 0, 0, opts.net, 1, 1, opts.step_timeout, 0.0, [])
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    send, commands = trio.open_memory_channel[str](16)
    async with trio.open_nursery() as outer:
        outer.start_soon(read_commands, stdin, send)
        emit({"event": "ready", "pid": os.getpid()})
        while True:
            verb, _, argument = (await commands.receive()).partition(" ")
            if verb in ("stop", "eof"):
                break
            if verb == "run":
                start, count = (int(x) for x in argument.split())
                emit(await run_cycles(opts, plan, tokens, start, count))
        outer.cancel_scope.cancel()


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--net", type=int, default=1, help="source addresses are 127.<net>.x.y")
    parser.add_argument("--addresses", type=int, default=2000, help="source addresses to rotate over")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="cycles in flight at once")
    parser.add_argument(
        "--no-refused", action="store_true", help="skip the refused second subscribe of every cycle"
    )
    parser.add_argument("--step-timeout", type=float, default=20.0, help="seconds a whole cycle may take")
    args = parser.parse_args(argv)
    if not 1 <= args.net <= 254 or not 1 <= args.addresses <= 250 * 250:
        parser.error("--net must be in 1..254, --addresses in 1..62500")
    return Options(
        port=args.port,
        secret=args.secret,
        net=args.net,
        addresses=args.addresses,
        users=max(1, args.users),
        channels=max(1, args.channels),
        concurrency=max(1, args.concurrency),
        step_timeout=args.step_timeout,
        refused=not args.no_refused,
    )


def main(argv: list[str] | None = None) -> None:
    trio.run(run, parse_args(argv))


if __name__ == "__main__":
    main()
