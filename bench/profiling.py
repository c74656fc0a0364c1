"""Optional sampling profiles of server processes during a benchmark phase, taken with py-spy.

py-spy is not a project dependency: install it into the virtualenv (``.venv/bin/pip install py-spy``)
to use ``--profile DIR``. Each phase writes one collapsed-stack file per process (``<phase>-<role>.txt``,
readable by flamegraph tools and speedscope) and a short text summary of the hottest functions.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(directory: Path | None, phase: str, pids: dict[str, int], rate: int = 200) -> Iterator[None]:
    """Sample ``pids`` (role → pid) while the body runs; a no-op when ``directory`` is None."""
    tool = py_spy() if directory is not None else None
    if directory is None or tool is None:
        if directory is not None:
            print("py-spy not found: no profiles taken", file=sys.stderr)
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    recorders: list[tuple[str, subprocess.Popen[bytes]]] = []
    for role, pid in pids.items():
        out = directory / f"{phase}-{role}.txt"
        command = [tool, "record", "--nonblocking", "--format", "raw", "--rate", str(rate)]
        command += ["--pid", str(pid), "--output", str(out)]
        recorders.append(
            (role, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        )
    time.sleep(1.0)  # let every recorder attach before the phase starts
    try:
        yield
    finally:
        for _, recorder in recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for _, recorder in recorders:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait(10)
        summaries = [summarize(directory / f"{phase}-{role}.txt", role) for role, _ in recorders]
        (directory / f"{phase}-summary.txt").write_text("\n\n".join(summaries) + "\n")


def summarize(path: Path, title: str, top: int = 15) -> str:
    """The functions with the most samples at the top of the stack (self) and anywhere on it (total)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
            if not frames:
                continue
            samples += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    lines = [f"== {title}: {samples} samples =="]
    if samples:
        lines.append("self%   function")
        lines += [f"{100 * n / samples:5.1f}  {frame}" for frame, n in own.most_common(top)]
        lines.append("total%  function")
        lines += [f"{100 * n / samples:5.1f}  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines)
