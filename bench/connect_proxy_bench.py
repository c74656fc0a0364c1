"""Connects/s with the connect proxy against connects/s with JWT, in one run on the same machine.

Runs :mod:`bench.connections_bench` three times — clients with their own HS256 tokens, then clients
without a token that a connect proxy backend (a bare uvloop server in its own process, answering the
user from the app name) authenticates, first with the router making the call, then with the shards
making it (``proxy_connect_placement: shard``: a shard picked by client id calls, then hands the socket
on to the user's shard) — and reports each, their ratios to JWT (target at least 0.6) and the CPU per
connect of the router and the shards. The by-user and CEL checks of the connections bench run in both
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
    by_router = run(dataclasses.replace(base, connect_proxy=True, connect_proxy_placement="router"))
    by_shard = run(dataclasses.replace(base, connect_proxy=True, connect_proxy_placement="shard"))
    results = (jwt, by_router, by_shard)
    failed = [name for result in results for name, ok, _ in result.checks if not ok]
    print(f"{opts.connections} uni_http_stream connections, {opts.users} users, 2 shards, 2 generators")
    print("| measure | JWT | proxy, router calls | ratio | proxy, shard calls | ratio |")
    print("|---|---|---|---|---|---|")
    for key in KEYS:
        a, b, c = (result.numbers.get(key) for result in results)
        if a is None or b is None or c is None:
            continue
        print(f"| {key} | {a:,.2f} | {b:,.2f} | {b / a:.2f}x | {c:,.2f} | {c / a:.2f}x |")
    for label, result in (("router", by_router), ("shard", by_shard)):
        ratio = result.numbers[KEYS[0]] / jwt.numbers[KEYS[0]]
        verdict = "ok" if ratio >= 0.6 else "MISSED"
        print(f"connects/s ratio, {label} calls: {ratio:.2f} (target >= 0.6): {verdict}")
    if failed:
        print(f"checks FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
