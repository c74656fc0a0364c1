"""Quick run of the held-connections benchmark (``bench.hold_bench --quick``).

A real server with 2 shards and a 3 s ping interval, 2,000 subscribed WebSocket connections held for
three ping intervals while publications go to all of them. It asserts that none was ended by the server
(close codes counted), every publication arrived and every connection was pinged.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.hold_bench import Outcome, quick_options, report_text, run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_hold_bench_quick(benchmark: Any) -> None:
    outcome: list[Outcome] = []
    benchmark.pedantic(lambda: outcome.append(run(quick_options())), rounds=1, iterations=1)
    result = outcome[0]
    print(report_text(result))
    benchmark.extra_info.update({name: round(value, 4) for name, value in result.numbers.items()})
    failed = [f"{name}: {detail}" for name, ok, detail in result.checks if not ok]
    assert not failed, failed
    assert not result.closes
