"""Per-shard subscriber counts of every channel, in shared memory, for the router's decisions.

Each shard writes its own column (its number of local subscribers per channel); the router reads
them to answer ``presence`` / ``presence_stats`` for a channel nobody is subscribed to without asking
any shard, and to ask only the shards that have subscribers otherwise. The counts are a hint: a shard
stays the authority for what it answers, and a missing segment just means "ask every shard".
"""

from __future__ import annotations

import logging
import zlib

from broker.config import Config
from broker.ipc.shm_index import CountIndex

log = logging.getLogger("switchboard.counts")


def index_name(cfg: Config) -> str:
    digest = zlib.crc32(str(cfg.runtime_path.resolve()).encode())
    return f"switchboard-{digest:08x}"


def open_counts(cfg: Config) -> CountIndex | None:
    """Create the segment, or attach to the one another process created; None when unusable now."""
    if not cfg.shm_index:
        return None
    name = index_name(cfg)
    try:
        try:
            index = CountIndex.create(name, capacity=cfg.shm_index_capacity, columns=cfg.num_shards)
        except FileExistsError:
            index = CountIndex.attach(name)
    except (OSError, ValueError) as exc:
        # Another process may be creating it right now; the caller tries again later.
        log.debug("channel counts %s not available yet: %s", name, exc)
        return None
    if index.columns != cfg.num_shards:
        log.warning(
            "channel counts %s have %d columns, not %d: not used", name, index.columns, cfg.num_shards
        )
        index.close()
        return None
    return index


def remove_counts(cfg: Config) -> None:
    """Drop the segment (the supervisor does it at start and at exit)."""
    CountIndex.remove(index_name(cfg))


def user_index_name(cfg: Config, shard: int) -> str:
    """Shard ``shard``'s segment of connections by user (:mod:`broker.ipc.user_index`)."""
    return f"{index_name(cfg)}-users-{shard}"


def remove_user_indexes(cfg: Config) -> None:
    """Drop every shard's user index (the supervisor does it at start and at exit)."""
    from broker.ipc.user_index import remove_segment

    for shard in range(cfg.num_shards):
        remove_segment(user_index_name(cfg, shard))
