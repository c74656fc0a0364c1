"""Merging shards' answers to one server API answer, without decoding what can be spliced."""

from __future__ import annotations

import logging

import orjson

from broker.errors import ClientError
from broker.ipc.control import RemoteError

log = logging.getLogger("switchboard.api")

_CONNECTIONS_PREFIX = b'{"connections":{'


def splice_connections(parts: list[bytes]) -> bytes:
    """Merge shards' ``{"connections":{...}}`` answers without decoding them (client ids never collide)."""
    inner = [part[len(_CONNECTIONS_PREFIX) : -2] for part in parts if part.startswith(_CONNECTIONS_PREFIX)]
    return _CONNECTIONS_PREFIX + b",".join(chunk for chunk in inner if chunk) + b"}}"


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
