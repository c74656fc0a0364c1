"""Dummy children for the supervisor tests (pure Python: no sockets, no event loop).

Every child writes what happens to it into ``cfg.runtime_dir``:

* ``<role>.pids``   one line per start, written right after ``ctx.ready()``;
* ``<role>.events`` one line per event (``term <pid>``, ``term-ignored <pid>``).

Each child also gives up after :data:`MAX_LIFETIME` seconds so that a broken test cannot leave processes
behind. :func:`supervise` runs an :class:`~broker.supervisor.Arbiter` over children named in a JSON
argument; the tests start it with ``python -c``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from broker.config import Config, Duration
from broker.lifecycle import ChildContext
from broker.logs import setup_logging
from broker.supervisor import Arbiter, ChildSpec

MAX_LIFETIME = 120.0
BOOT_ERROR_MARKER = "boot-marker-42: cannot open the ipc socket"


def _record(cfg: Config, ctx: ChildContext, kind: str, line: str) -> None:
    path = Path(cfg.runtime_dir) / f"{ctx.role}.{kind}"
    with path.open("a") as fh:
        fh.write(line + "\n")


def _started(cfg: Config, ctx: ChildContext) -> None:
    ctx.ready()
    _record(cfg, ctx, "pids", str(os.getpid()))


def _ctx(rest: tuple[Any, ...]) -> ChildContext:
    ctx = rest[-1]
    assert isinstance(ctx, ChildContext)
    return ctx


def _beat_until_term(cfg: Config, ctx: ChildContext) -> bool:
    """Ready at once, beats every 50 ms until SIGTERM (True) or the lifetime cap (False)."""
    stopping: list[int] = []

    def on_term(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    _started(cfg, ctx)
    deadline = time.monotonic() + MAX_LIFETIME
    while not stopping and time.monotonic() < deadline:
        ctx.beat()
        time.sleep(0.05)  # the dummy's heartbeat period
    return bool(stopping)


def well_behaved(cfg: Config, *rest: Any) -> None:
    """Ready at once, beats every 50 ms, exits on SIGTERM (and records it)."""
    ctx = _ctx(rest)
    if _beat_until_term(cfg, ctx):
        _record(cfg, ctx, "events", f"term {os.getpid()}")


def slow_to_stop(cfg: Config, *rest: Any) -> None:
    """Like :func:`well_behaved`, but takes 1.5 s to stop after SIGTERM (draining its clients)."""
    ctx = _ctx(rest)
    _beat_until_term(cfg, ctx)
    time.sleep(1.5)  # the dummy's drain time
    _record(cfg, ctx, "events", f"stopped {os.getpid()}")


def boot_failure(cfg: Config, *rest: Any) -> None:
    """Fails before it is ready."""
    raise RuntimeError(BOOT_ERROR_MARKER)


def ignores_term(cfg: Config, *rest: Any) -> None:
    """Ready, beats, ignores SIGTERM (recording it); leaves only when the supervisor is gone."""
    ctx = _ctx(rest)

    def on_term(signum: int, frame: FrameType | None) -> None:
        _record(cfg, ctx, "events", f"term-ignored {os.getpid()}")

    signal.signal(signal.SIGTERM, on_term)
    _started(cfg, ctx)
    deadline = time.monotonic() + MAX_LIFETIME
    while ctx.parent_alive() and time.monotonic() < deadline:
        ctx.beat()
        time.sleep(0.05)  # the dummy's heartbeat period


def stuck_first(cfg: Config, *rest: Any) -> None:
    """First start: ready, then never beats again (a blocked loop). Later starts: :func:`well_behaved`."""
    ctx = _ctx(rest)
    if (Path(cfg.runtime_dir) / f"{ctx.role}.pids").exists():
        well_behaved(cfg, *rest)
        return
    _started(cfg, ctx)
    deadline = time.monotonic() + MAX_LIFETIME
    while ctx.parent_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # blocked: no heartbeat, only a look at the parent now and then


def busy_for_a_while(cfg: Config, *rest: Any) -> None:
    """Ready, then one long step: 5 s of CPU without a heartbeat (a storm on a loaded machine), then
    beats again."""
    ctx = _ctx(rest)
    _started(cfg, ctx)
    busy_until = time.monotonic() + 5.0
    while time.monotonic() < busy_until:
        sum(range(10_000))
    _record(cfg, ctx, "events", f"busy-done {os.getpid()}")
    deadline = time.monotonic() + MAX_LIFETIME
    while ctx.parent_alive() and time.monotonic() < deadline:
        ctx.beat()
        time.sleep(0.05)


def spins_first(cfg: Config, *rest: Any) -> None:
    """First start: ready, then spins without a heartbeat for ever (a livelock). Later starts:
    :func:`well_behaved`."""
    ctx = _ctx(rest)
    if (Path(cfg.runtime_dir) / f"{ctx.role}.pids").exists():
        well_behaved(cfg, *rest)
        return
    _started(cfg, ctx)
    deadline = time.monotonic() + MAX_LIFETIME
    while ctx.parent_alive() and time.monotonic() < deadline:
        sum(range(10_000))


def exits_after_ready(cfg: Config, *rest: Any) -> None:
    """Ready, then returns soon after: dies after ready every time."""
    ctx = _ctx(rest)
    _started(cfg, ctx)
    time.sleep(0.1)  # the dummy's short life after ready


def supervise(options_json: str) -> int:
    """Run an Arbiter: ``{"runtime_dir", "specs": [{"role", "target", "index"}], ...timeouts}``."""
    options = json.loads(options_json)
    cfg = Config(
        runtime_dir=options["runtime_dir"],
        shutdown_timeout=Duration(options.get("shutdown_timeout", 10.0)),
        heartbeat_timeout=Duration(options.get("heartbeat_timeout", 30.0)),
        log_level="debug",
    )
    specs = [ChildSpec(s["role"], s["target"], s.get("index")) for s in options["specs"]]
    setup_logging(cfg.log_level, "supervisor")
    arbiter = Arbiter(
        cfg,
        specs,
        max_restarts=options.get("max_restarts", 5),
        restart_window=options.get("restart_window", 10.0),
        tick=options.get("tick", 1.0),
    )
    return arbiter.run()


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1]))
