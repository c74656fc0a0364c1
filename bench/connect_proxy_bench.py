"""Connects/s with the connect proxy against connects/s with JWT, in one run on the same machine.

Runs :mod:`bench.connections_bench` twice — clients with their own HS256 tokens, then clients without a
token that a connect proxy backend (an aiohttp server in its own process, answering the user from the
app name) authenticates — and reports both, their ratio (target at least 0.6) and the CPU per connect of the
router, which makes the proxy call. The by-user and CEL checks of the connections bench run in both
(every client is found under the user the backend named).

    .venv/bin/python -m bench.connect_proxy_bench                  # 10,000 connections each
    .venv/bin/python -m bench.connect_proxy_bench --connections 4000
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from bench.connections_bench import Options, run

KEYS = (
    "connects/s, all generators",
    "connect latency p50 (all)",
    "connect latency p99 (worst generator)",
    "CPU per connect: router",
    "CPU per connect: shards (sum)",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    opts = parser.parse_args(argv)
    base = Options(connections=opts.connections, users=opts.users, by_user_requests=200, scan_requests=5)
    jwt = run(base)
    proxied = run(dataclasses.replace(base, connect_proxy=True))
    failed = [name for result in (jwt, proxied) for name, ok, _ in result.checks if not ok]
    print(f"{opts.connections} uni_http_stream connections, {opts.users} users, 2 shards, 2 generators")
    print("| measure | JWT | connect proxy | ratio |")
    print("|---|---|---|---|")
    for key in KEYS:
        a, b = jwt.numbers.get(key), proxied.numbers.get(key)
        if a is None or b is None:
            continue
        print(f"| {key} | {a:,.2f} | {b:,.2f} | {b / a:.2f}x |")
    ratio = proxied.numbers[KEYS[0]] / jwt.numbers[KEYS[0]]
    print(f"connects/s ratio {ratio:.2f} (target >= 0.6): {'ok' if ratio >= 0.6 else 'MISSED'}")
    if failed:
        print(f"checks FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
