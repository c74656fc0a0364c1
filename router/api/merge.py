"""Merging shards' answers to one server API answer, without decoding what can be spliced."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from broker.errors import ClientError
from broker.ipc.control import RemoteError

log = logging.getLogger("switchboard.api")

_CONNECTIONS_PREFIX = b'{"connections":{'


def splice_connections(parts: list[bytes]) -> bytes:
    """Merge shards' ``{"connections":{...}}`` answers without decoding them (client ids never collide)."""
    inner = [part[len(_CONNECTIONS_PREFIX) : -2] for part in parts if part.startswith(_CONNECTIONS_PREFIX)]
    return _CONNECTIONS_PREFIX + b",".join(chunk for chunk in inner if chunk) + b"}}"


def user_answer(fragment: bytes, limit: int, exclude_client: str, sort: str) -> bytes:
    """A by-user answer from the user's fragment (``"<client>":{…},…``), shaped as the shard shapes it:
    ``exclude_client`` left out, ordered by ``sort``, at most ``limit`` with a ``total``."""
    if not limit and not exclude_client and not sort:
        return _CONNECTIONS_PREFIX + fragment + b"}}"
    found = [item for item in orjson.loads(b"{" + fragment + b"}").items() if item[0] != exclude_client]
    if sort:
        found.sort(key=lambda item: int(item[1].get("connected_at_ms", 0)), reverse=sort.startswith("-"))
    answer: dict[str, Any] = {"connections": dict(found[:limit] if limit else found)}
    if limit:
        answer["total"] = len(found)
    return orjson.dumps(answer)


def limit_connections(answers: list[dict[str, Any]], limit: int, sort: str = "") -> dict[str, Any]:
    """Answers made with a ``limit`` and/or a ``sort`` as one: in that order, at most ``limit``
    connections (0: all), and with a limit ``total`` over them all."""
    found: list[tuple[str, Any]] = []
    total = 0
    for answer in answers:
        part = answer.get("connections", {})
        total += int(answer.get("total", len(part)))
        found += part.items()
    if sort:
        # Each answer is sorted already; the merged one is sorted again as a whole.
        found.sort(key=lambda item: int(item[1].get("connected_at_ms", 0)), reverse=sort.startswith("-"))
    merged: dict[str, Any] = {"connections": dict(found[:limit] if limit else found)}
    if limit:
        merged["total"] = total
    return merged


def with_unavailable_shards(merged: bytes, missing: list[int]) -> bytes:
    """Name the shards that did not answer, so a partial answer is never taken for a whole one."""
    if not missing:
        return merged
    return merged[:-1] + b',"unavailable_shards":' + orjson.dumps(missing) + b"}"


def first_client_error(found: dict[int, RemoteError]) -> ClientError | None:
    """The error of the lowest-numbered failing shard, so the same failure gives the same answer."""
    for index in sorted(found):
        return found[index].to_client_error()
    return None


def merge_info(results: dict[int, dict[str, Any]], missing: list[int]) -> dict[str, Any]:
    """This node's counts from its shards' ``info`` answers, each shard listed (silent ones as such).

    A user's connections all live on one shard, so named users add up; anonymous connections count as
    one user however many shards have some.
    """
    shards: list[dict[str, Any]] = []
    clients = users = subs = 0
    anonymous = False
    channels: set[str] = set()
    for index in sorted(results):
        stats = results[index]
        clients += stats["num_clients"]
        users += stats["num_users"]
        subs += stats["num_subs"]
        anonymous = anonymous or stats["num_anonymous"] > 0
        channels.update(stats.get("channels", ()))
        shard = {key: stats[key] for key in _SHARD_INFO}
        shards.append({"index": index, **shard})
    shards.extend({"index": index, "unavailable": True} for index in missing)
    shards.sort(key=lambda item: item["index"])
    return {
        "num_clients": clients,
        "num_users": users + (1 if anonymous else 0),
        "num_channels": len(channels),
        "num_subs": subs,
        "shards": shards,
    }


_SHARD_INFO = ("pid", "num_clients", "num_users", "num_channels", "num_subs", "uptime", "rss")
