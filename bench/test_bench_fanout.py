"""Smoke run of the WebSocket fan-out benchmark (``bench.fanout_bench --quick``).

A real server with 2 shards and the bare ceiling server, 1,000 WebSocket connections to each, the
short ladder (1, 100, 1,000 subscribers; 1,000 over 10 channels) in both burst shapes. It asserts
correctness only (every connect, every subscribe reply, every delivery, nothing ended early); the
deliveries/s and latencies go into the benchmark's ``extra_info``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.fanout_bench import Outcome, quick_options, report, run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_fanout_bench_quick(benchmark: Any) -> None:
    outcome: list[Outcome] = []
    benchmark.pedantic(lambda: outcome.append(run(quick_options())), rounds=1, iterations=1)
    result = outcome[0]
    print(report(result))
    benchmark.extra_info.update({name: round(value, 4) for name, value in result.numbers.items()})
    for phase in result.phases:
        key = f"{phase.target} {phase.rung} {phase.per_burst}/burst"
        benchmark.extra_info[f"{key} deliveries/s"] = round(phase.rate)
        benchmark.extra_info[f"{key} p99 ms"] = round(phase.p99, 3)
    failed = [f"{name}: {detail}" for name, ok, detail in result.checks if not ok]
    assert not failed, failed
    assert all(phase.deliveries == phase.expected > 0 for phase in result.phases)
