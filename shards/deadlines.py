"""Keys with one deadline each (connection expiry, subscription expiry), due ones in deadline order.

Theory of operation
-------------------
A heap of ``(deadline, key)`` entries finds the next deadline in O(log n), and a dict ``key → deadline``
says which entry is the live one: setting a new deadline pushes a new entry and leaves the old one in the
heap, stale, because removing from the middle of a heap is O(n). Stale entries are skipped when they come
due. Left at that, a shard would keep one entry per connection that ever had an expiring token until the
token's expiry — hours — long after the connection closed: memory that grows with churn. So a key that
goes away is dropped from the dict at once, and when stale entries outnumber the live ones (plus a small
slack) the heap is rebuilt from the dict, which costs O(live) once per as many removals: amortised O(1).
With no live key left the heap is simply emptied. No clock here: ``now`` is passed in.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

SLACK = 64


class Deadlines(Generic[K]):
    __slots__ = ("_at", "_heap")

    def __init__(self) -> None:
        self._at: dict[K, float] = {}
        self._heap: list[tuple[float, K]] = []

    def __len__(self) -> int:
        """Keys with a deadline."""
        return len(self._at)

    @property
    def held(self) -> int:
        """Heap entries held, stale ones included (what the memory is spent on)."""
        return len(self._heap)

    def get(self, key: K) -> float | None:
        return self._at.get(key)

    def set(self, key: K, deadline: float) -> None:
        """Give ``key`` a deadline, replacing any earlier one; 0 means none."""
        if not deadline:
            self.discard(key)
            return
        if self._at.get(key) == deadline:
            return
        self._at[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        self._compact()

    def discard(self, key: K) -> None:
        if self._at.pop(key, None) is not None:
            self._compact()

    def pop_due(self, now: float) -> list[tuple[K, float]]:
        """Every key whose deadline is ``<= now``, earliest first, with its deadline; they are removed."""
        heap = self._heap
        at = self._at
        due: list[tuple[K, float]] = []
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if at.get(key) == deadline:
                del at[key]
                due.append((key, deadline))
        return due

    def _compact(self) -> None:
        if not self._at:
            self._heap.clear()
        elif len(self._heap) > 2 * len(self._at) + SLACK:
            self._heap = [(deadline, key) for key, deadline in self._at.items()]
            heapq.heapify(self._heap)
