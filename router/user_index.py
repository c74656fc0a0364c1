"""The shards' connections by user, read from shared memory (:mod:`broker.ipc.user_index`).

A by-user ``connections`` answer is spliced from the user's shard's segment without a round trip. A
segment that is missing, stale (its shard stopped beating: gone, restarting or stuck) or incomplete
answers None, and the caller asks the shard as before; a stale one is attached again by name now and
then, which picks up the segment a restarted shard wrote.
"""

from __future__ import annotations

import time

from broker.config import Config
from broker.ipc.channel_counts import user_index_name
from broker.ipc.user_index import UserIndexReader

# How long after a failed attach (or a stale segment) the name is tried again.
REATTACH_INTERVAL = 0.5


class UserIndexes:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.enabled = cfg.shm_user_index
        self._readers: dict[int, UserIndexReader] = {}
        self._next_try: dict[int, float] = {}

    def fragment(self, shard: int, user: str) -> bytes | None:
        """``user``'s part of the connections answer, as its shard would write it, or None: ask it."""
        if not self.enabled:
            return None
        reader = self._reader(shard)
        if reader is None:
            return None
        return reader.get(user)

    def _reader(self, shard: int) -> UserIndexReader | None:
        now = time.monotonic()
        reader = self._readers.get(shard)
        if reader is not None and reader.fresh(time.time_ns()):
            return reader
        if now < self._next_try.get(shard, 0.0):
            return None
        self._next_try[shard] = now + REATTACH_INTERVAL
        fresh = UserIndexReader.attach(user_index_name(self.cfg, shard))
        if fresh is None or not fresh.fresh(time.time_ns()):
            if fresh is not None:
                fresh.close()
            return None
        if reader is not None:
            reader.close()
        self._readers[shard] = fresh
        return fresh

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
