"""Smoke run of the whole-server connections benchmark (``bench.connections_bench --smoke``).

A real server with 2 shards, one load generator opening 1,000 ``uni_http_stream`` connections for 100
users, then by-user and CEL queries. It asserts correctness only (every connect push, exact by-user and
scan answers, nothing left running); the timings are recorded in the benchmark's ``extra_info``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.connections_bench import Result, report, run, smoke_options

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_connections_bench_smoke(benchmark: Any) -> None:
    outcome: list[Result] = []
    benchmark.pedantic(lambda: outcome.append(run(smoke_options())), rounds=1, iterations=1)
    result = outcome[0]
    print(report(result))
    benchmark.extra_info.update({name: round(value, 4) for name, value in result.numbers.items()})
    failed = [f"{name}: {detail}" for name, ok, detail in result.checks if not ok]
    assert not failed, failed
    assert result.numbers["shard RSS per connection"] > 0
