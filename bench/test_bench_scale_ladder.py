"""The scale ladder's report and plots from made-up numbers, and a short real run (marked slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scale_ladder
from bench.scale_ladder import Options, Outcome, report


def made_up() -> Outcome:
    outcome = Outcome(Options(rungs=[1_000, 10_000]), began="now")
    for rung, scale in ((1_000, 1.0), (10_000, 2.0)):
        outcome.put(rung, "switchboard", "connects/s", 1_000 * scale)
        outcome.put(rung, "node", "connects/s", 2_000 * scale)
        outcome.put(rung, "ceiling", "connects/s", 4_000 * scale)
        outcome.put(rung, "switchboard", "by user p50 (ms)", 0.3)
        outcome.put(rung, "switchboard", "/health p50 (ms)", 0.2)
    return outcome


TIMES = "\N{MULTIPLICATION SIGN}"


def test_report_shows_ratios_to_node_and_the_ceiling() -> None:
    text = report(made_up())
    assert f"| 1,000 | 1,000 | 2,000 | 4,000 | 0.50{TIMES} | 0.25{TIMES} |" in text
    assert f"| 10,000 | 2,000 | 4,000 | 8,000 | 0.50{TIMES} | 0.25{TIMES} |" in text
    assert f"1.50{TIMES} / -" in text  # by user over /health at p50; p99 not measured


def test_a_plot_per_metric_measured_at_two_rungs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from bench.scale_plots import plot_all

    written = plot_all(made_up(), tmp_path)
    assert sorted(p.name for p in written) == ["by-user-p50-ms.png", "connects-s.png", "health-p50-ms.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_ladder_runs_every_check() -> None:
    opts = scale_ladder.parse_args(["--quick", "--no-plots"])
    outcome = scale_ladder.run(opts)
    failed = [(name, detail) for name, passed, detail in outcome.checks if not passed]
    assert not failed, failed
    for target in ("switchboard", "node", "ceiling"):
        assert outcome.get(3_000, target, "connects/s") > 0
