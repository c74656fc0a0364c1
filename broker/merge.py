"""Merging per-shard answers into one, shared by the router (server API) and shards (client commands).

Presence and channel counts are kept where the subscribers are: each shard answers for its own
connections and these functions combine the answers. A user's connections all live on one shard, so
named users never repeat across shards; anonymous connections (user ``""``) do, and count as one user.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any


def merge_presence(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    presence: dict[str, Any] = {}
    for part in parts:
        presence.update(part.get("presence", {}))
    return {"presence": presence}


def merge_presence_stats(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    clients = users = 0
    anonymous = False
    for part in parts:
        clients += part.get("num_clients", 0)
        users += part.get("num_named_users", 0)
        anonymous = anonymous or bool(part.get("anonymous"))
    return {"num_clients": clients, "num_users": users + (1 if anonymous else 0)}


def merge_channels(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    channels: dict[str, dict[str, int]] = {}
    for part in parts:
        for channel, count in part.get("channels", {}).items():
            entry = channels.setdefault(channel, {"num_clients": 0})
            entry["num_clients"] += count
    return {"channels": channels}


@lru_cache(maxsize=128)
def glob_matcher(pattern: str) -> re.Pattern[str]:
    """A glob (``*``, ``?``, ``[...]``, ``{a,b}``) as a compiled regular expression."""
    alternatives = _expand_braces(pattern)
    return re.compile("|".join(f"(?:{fnmatch.translate(item)})" for item in alternatives))


def _expand_braces(pattern: str) -> list[str]:
    start = pattern.find("{")
    end = pattern.find("}", start + 1)
    if start < 0 or end < 0:
        return [pattern]
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    out: list[str] = []
    for option in body.split(","):
        out.extend(_expand_braces(head + option + tail))
    return out
