"""Quick run of the channel-features benchmark (``bench.channel_features_bench --quick``).

Two servers with 2 shards (shared-memory index on and off) with 1,000 WebSocket subscribers over 100
channels each, then presence and ``channels`` requests; a third server for recovery (200 clients, 200
publications) and publish throughput with history on and off. It asserts correctness only (every
answer, every recovered publication, every delivery, nothing ended early); the timings go into the
benchmark's ``extra_info``.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.channel_features_bench import Result, quick_options, report, run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_channel_features_bench_quick(benchmark: Any) -> None:
    outcome: list[Result] = []
    benchmark.pedantic(lambda: outcome.append(run(quick_options())), rounds=1, iterations=1)
    result = outcome[0]
    print(report(result))
    benchmark.extra_info.update({name: round(value, 4) for name, value in result.numbers.items()})
    failed = [f"{name}: {detail}" for name, ok, detail in result.checks if not ok]
    assert not failed, failed
    assert result.numbers["recovery round 1 total ms"] > 0
