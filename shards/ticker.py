"""Which connections a shard pings, and whose pongs it checks, on each tick: no loop, no clock.

Theory of operation
-------------------
Connections are spread over one bucket per second of ``ping_interval`` by the second they connected in,
so that a shard pings a 1/interval share of them each second instead of all at once. The shard's ticker
calls :meth:`PingWheel.advance` with the current time; the wheel remembers the last whole second it
handled and returns the work of every second since, each bucket once:

* ping the buckets of the seconds that passed;
* check the pongs of the buckets pinged ``pong_timeout + 1`` seconds before those seconds.

A ticker that woke late (a busy loop, a paused process) therefore catches up in one call: the buckets of
the seconds it missed are pinged once, no bucket twice, and after a jump longer than the interval every
bucket once. A clock that went back does nothing until it passes the last handled second again.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class PingWheel(Generic[T]):
    __slots__ = ("_buckets", "_check_lag", "_last")

    def __init__(self, ping_interval: float, pong_timeout: float, now: float) -> None:
        self._buckets: list[set[T]] = [set() for _ in range(max(1, math.ceil(ping_interval)))]
        self._check_lag = int(pong_timeout) + 1
        self._last = int(now)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)

    def _bucket(self, connected_at: float) -> set[T]:
        return self._buckets[int(connected_at) % len(self._buckets)]

    def add(self, item: T, connected_at: float) -> None:
        self._bucket(connected_at).add(item)

    def discard(self, item: T, connected_at: float) -> None:
        self._bucket(connected_at).discard(item)

    def advance(self, now: float) -> tuple[list[T], list[T]]:
        """The connections to ping and those whose pong to check, for the seconds up to ``now``."""
        second = int(now)
        missed = second - self._last
        if missed <= 0:
            return [], []
        self._last = second
        size = len(self._buckets)
        seconds = range(second - min(missed, size) + 1, second + 1)
        to_ping = [item for s in seconds for item in self._buckets[s % size]]
        checked = {(s - self._check_lag) % size for s in seconds}
        to_check = [item for index in sorted(checked) for item in self._buckets[index]]
        return to_ping, to_check
