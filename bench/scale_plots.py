"""PNG plots of a scale ladder (:mod:`bench.scale_ladder`): one per metric, connections on a log axis."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Protocol

COLOURS = {
    "switchboard": "#1f77b4",
    "node": "#2ca02c",
    "ceiling": "#7f7f7f",
    "ceiling, coalesced": "#7f7f7f",
    "ceiling, 1 write per frame": "#bcbd22",
}
LABELS = {"node": "Node.js ws", "ceiling": "ceiling (bare uvloop)"}


class Ladder(Protocol):
    numbers: dict[tuple[int, str, str], float]


def slug(metric: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", metric.lower()).strip("-")


def series(ladder: Ladder, metric: str) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for (rung, target, name), value in sorted(ladder.numbers.items()):
        if name == metric and not math.isnan(value):
            found.setdefault(target, []).append((rung, value))
    return found


def plot_all(ladder: Ladder, directory: Path) -> list[Path]:
    """One PNG per metric measured at two rungs or more; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = sorted({name for (_, _, name) in ladder.numbers})
    for metric in metrics:
        lines = series(ladder, metric)
        if not any(len(points) >= 2 for points in lines.values()):
            continue
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for target, points in sorted(lines.items()):
            xs, ys = zip(*points, strict=True)
            style = "--" if target.startswith("ceiling, 1") else "-"
            axes.plot(xs, ys, style, marker="o", label=LABELS.get(target, target), color=COLOURS.get(target))
        axes.set_xscale("log")
        axes.set_xlabel("connections held")
        axes.set_title(metric)
        axes.grid(True, which="both", alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend()
        figure.tight_layout()
        path = directory / f"{slug(metric)}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
