"""Stable placement of users on shards.

Placement must agree across processes and restarts, so it uses crc32 of the UTF-8 user id, never
Python's per-process salted ``hash()``. Anonymous connections (user ``""``) are placed by their client id
so that they spread over all shards instead of piling onto one.
"""

from __future__ import annotations

import zlib


def stable_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def shard_for(user: str, client: str, num_shards: int) -> int:
    """The shard that owns a connection of ``user`` (or of anonymous ``client``)."""
    if num_shards <= 1:
        return 0
    return stable_hash(user if user else client) % num_shards


def shard_for_user(user: str, num_shards: int) -> int | None:
    """The one shard that holds every connection of a named user; None for anonymous users."""
    if not user:
        return None
    return shard_for(user, "", num_shards)


def writer_for(channel: str, num_shards: int) -> int:
    """The shard that orders (and, with history, stores) every publication of ``channel``."""
    if num_shards <= 1:
        return 0
    return stable_hash(channel) % num_shards
