"""The names Switchboard uses in Redis: keys and PUB/SUB channels, built without I/O.

Everything starts with the prefix (``redis_prefix``, default ``switchboard``) so that several servers,
or tests, can share one Redis. What belongs to one channel — its PUB/SUB channel, stream, stream meta,
idempotency results, presence — carries the channel as a Redis Cluster *hash tag* (``{…}``): Redis
Cluster places a key by the text between its first ``{`` and the next ``}``, so all of a channel's keys
live in one slot and one Lua script may touch them all (and PUBLISH to its channel, which a cluster that
checks script slots, or sharded PUB/SUB, requires). What belongs to one user is tagged by the user the
same way, so the per-user limit is one script too.

A channel or user is free text, and a ``}`` in it would end the tag early; a tag that ends up empty
(text starting with ``}``) makes Redis hash the whole key, which splits a channel's keys over slots. So
the text inside the tag is escaped: ``\\`` → ``\\\\`` and ``}`` → ``\\)``. The escape is injective and the
tag's end is then always the ``}`` we put there, so two channels never share a key and ordinary names
(no ``}`` or ``\\``) appear as they are.

====================================  =======================================================
name                                  what
====================================  =======================================================
``P.client.{ch}``                     PUB/SUB channel of ``ch``'s publications (and join/leave)
``P.stream.{ch}``                     STREAM of ``ch``'s publications, entry id ``<offset>-0``
``P.meta.{ch}``                       HASH ``e`` epoch, ``s`` top offset
``P.result.{ch}.<key>``               HASH ``e``, ``s``: the first publish with idempotency ``key``
``P.presence.data.{ch}``              HASH client id → ClientInfo
``P.presence.expire.{ch}``            ZSET client id → expiry time
``P.control``                         PUB/SUB channel every node listens to
``P.node.<node id>``                  PUB/SUB channel of one node (unicast control, replies)
``P.user.nodes.{user}``               HASH node id → the user's connections on that node
``P.user.expire.{user}``              ZSET node id → when that node's count stops counting
``P.seat.users.{seat}``               SET the users a shard of a node holds (seat: name/index)
``P.seat.holder.{seat}``              STRING the holder id of the seat's current life
====================================  =======================================================

The user's HASH is both the user → nodes index (its fields) and the per-user connection counts (their
sum, for the cluster-wide limit); Redis 7.0 has no expiry per hash field, so each node's entry expires
through the ZSET beside it, refreshed by the node while it holds the user's connections. A *seat* (a
node's name and a shard index) remembers which users its current life holds, so that the next life of
that shard — after a crash, or the node's restart — takes back what the previous one counted at once
instead of waiting for the entries to expire.
"""

from __future__ import annotations

DEFAULT_PREFIX = "switchboard"


def tag(text: str) -> str:
    """``{text}`` with ``text`` escaped so that the tag is never empty nor ends early."""
    if "}" in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace("}", "\\)")
    return "{" + text + "}"


class RedisKeys:
    """Every key and PUB/SUB name under one prefix."""

    __slots__ = ("control", "prefix")

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would become the hash tag and put every key in one slot.
            raise ValueError(f"redis_prefix must be non-empty and without braces, not {prefix!r}")
        self.prefix = prefix
        self.control = f"{prefix}.control"

    # -- a channel (all in the slot of its tag) -------------------------------------------------------

    def publications(self, channel: str) -> str:
        return f"{self.prefix}.client.{tag(channel)}"

    def stream(self, channel: str) -> str:
        return f"{self.prefix}.stream.{tag(channel)}"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}.meta.{tag(channel)}"

    def result(self, channel: str, idempotency_key: str) -> str:
        return f"{self.prefix}.result.{tag(channel)}.{idempotency_key}"

    def presence_data(self, channel: str) -> str:
        return f"{self.prefix}.presence.data.{tag(channel)}"

    def presence_expire(self, channel: str) -> str:
        return f"{self.prefix}.presence.expire.{tag(channel)}"

    # -- nodes --------------------------------------------------------------------------------------

    def node(self, node_id: str) -> str:
        return f"{self.prefix}.node.{node_id}"

    # -- a user (all in the slot of its tag) ----------------------------------------------------------

    def user_nodes(self, user: str) -> str:
        return f"{self.prefix}.user.nodes.{tag(user)}"

    def user_expire(self, user: str) -> str:
        return f"{self.prefix}.user.expire.{tag(user)}"

    def user_status(self, user: str) -> str:
        return f"{self.prefix}.user.status.{tag(user)}"

    # -- a shard's seat on a node (its lives come and go; the seat stays) -------------------------------

    def seat_users(self, seat: str) -> str:
        return f"{self.prefix}.seat.users.{tag(seat)}"

    def seat_holder(self, seat: str) -> str:
        return f"{self.prefix}.seat.holder.{tag(seat)}"
