"""Quick run of the churn benchmark (``bench.churn_bench --quick``).

A real server with 2 shards, one generator running 2,000 connect → subscribe → refused subscribe →
publish → close cycles, RSS every 500. It asserts correctness only (every cycle completed with close
1000, the server counts nothing left); the RSS samples go into the benchmark's ``extra_info``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.churn_bench import Outcome, quick_options, report, run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_churn_bench_quick(benchmark: Any) -> None:
    outcome: list[Outcome] = []
    benchmark.pedantic(lambda: outcome.append(run(quick_options())), rounds=1, iterations=1)
    result = outcome[0]
    print(report(result))
    benchmark.extra_info.update({name: round(value, 4) for name, value in result.numbers.items()})
    for sample in result.samples:
        for role, rss in sample.rss.items():
            benchmark.extra_info[f"{role} RSS MiB after {sample.cycles}"] = round(rss / 2**20, 2)
    failed = [f"{name}: {detail}" for name, ok, detail in result.checks if not ok]
    assert not failed, failed
    assert len(result.samples) == 1 + 2_000 // 500
