"""The ``connections`` API's CEL filter: one compile function for router and shards, and a bounded scan.

The router compiles an expression before asking any shard, so a bad or too costly one is refused at once;
each shard compiles it again with the same function (its own cache), so a shard never runs an expression
the limits refuse, whoever sent it.

:class:`Scan` evaluates a filter over a snapshot of connections in slices. It does no I/O: the caller runs
:meth:`Scan.run_slice` and, while it returns False, lets other work run before the next slice. Between
slices it enforces the request's deadline and its runtime budget.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from broker import errors
from broker.cel import CelError, CompiledFilter, compile_filter
from broker.cel.limits import DEFAULT_CHANNELS_SIZE
from broker.config import Config
from broker.protocol.state import CEL_GETTERS

# How long one slice may evaluate before the scan lets the event loop run (heartbeats, pings, fan-out).
SLICE_SECONDS = 0.002
# Estimated steps evaluated between two looks at the clock: a cheap filter checks it every few hundred
# connections, the costliest one about every connection.
STEPS_PER_CLOCK_CHECK = 4000


class ScanStopped(Exception):
    """The scan was stopped (deadline passed); ``str()`` says why."""


@functools.lru_cache(maxsize=256)
def _compiled(expression: str, max_length: int, max_cost: int, channels_size: int) -> CompiledFilter | str:
    """The filter, or the reason it was refused: refusals are cached too, since parsing a long expression
    takes longer than anything else a refused request costs."""
    try:
        return compile_filter(
            expression, CEL_GETTERS, max_length=max_length, max_cost=max_cost, channels_size=channels_size
        )
    except CelError as exc:
        return str(exc)


def compile_connections_filter(expression: str, cfg: Config) -> CompiledFilter:
    """The compiled filter (cached), or 107 with the reason when the expression is invalid or too costly."""
    compiled = _compiled(
        expression,
        cfg.connections_expression_max_length,
        cfg.connections_expression_max_cost,
        cfg.client_channel_limit if cfg.client_channel_limit > 0 else DEFAULT_CHANNELS_SIZE,
    )
    if isinstance(compiled, str):
        raise errors.BAD_REQUEST.with_message(f"bad expression: {compiled}")
    return compiled


class Scan:
    """Evaluates ``flt`` over ``candidates`` (a snapshot list), in slices, within a budget and a deadline.

    ``is_open(conn)`` tells whether a connection is still live: one that closed while the scan was paused
    is skipped, and one that closed after it matched is left out of :meth:`matched`. ``state(conn)`` is
    what the filter sees. The budget is ``max_cost`` comprehension iterations per scanned connection (the
    static estimate allows at most that many, so only data larger than the estimate assumed exhausts it).
    """

    __slots__ = (
        "_deadline",
        "_filter",
        "_found",
        "_is_open",
        "_max_cost",
        "_position",
        "_spent",
        "_state",
        "candidates",
        "chunk",
    )

    def __init__(
        self,
        flt: CompiledFilter,
        candidates: list[Any],
        *,
        state: Callable[[Any], Any],
        is_open: Callable[[Any], bool],
        max_cost: int,
        deadline: float,
    ) -> None:
        self._filter = flt
        self.candidates = candidates
        self._state = state
        self._is_open = is_open
        self._max_cost = max_cost
        self._deadline = deadline
        self.chunk = max(1, STEPS_PER_CLOCK_CHECK // max(flt.cost, 1))
        self._position = 0
        self._spent = 0
        self._found: list[Any] = []

    @property
    def scanned(self) -> int:
        return self._position

    def run_slice(self) -> bool:
        """Evaluate for up to ``SLICE_SECONDS``; True when every candidate has been evaluated.

        Raises 107 when the runtime budget is exhausted and :class:`ScanStopped` past the deadline.
        """
        now = time.monotonic()
        if now >= self._deadline:
            raise ScanStopped(f"deadline passed after {self._position} of {len(self.candidates)} connections")
        slice_end = min(now + SLICE_SECONDS, self._deadline)
        candidates = self.candidates
        total = len(candidates)
        evaluate = self._filter.function  # ``matches`` without a call per connection: errors caught here
        meter = self._filter.meter
        state = self._state
        is_open = self._is_open
        found = self._found
        while self._position < total:
            start = self._position
            stop = min(start + self.chunk, total)
            before = meter.steps
            for conn in candidates[start:stop]:
                if is_open(conn):
                    try:
                        if evaluate(state(conn)) is True:  # exactly true; any error: not matched
                            found.append(conn)
                    except Exception:
                        pass
            self._position = stop
            # Evaluation never awaits, so everything the meter counted meanwhile is this scan's.
            self._spent += meter.steps - before
            if self._spent > self._max_cost * stop:
                raise errors.BAD_REQUEST.with_message(
                    f"bad expression: expression too costly: {self._spent} evaluation steps for "
                    f"{stop} connections, limit {self._max_cost} per connection"
                )
            if stop < total and time.monotonic() >= slice_end:
                return False
        return True

    def matched(self) -> Iterable[Any]:
        """The matched connections that are still open."""
        return [conn for conn in self._found if self._is_open(conn)]
