"""Bidirectional emulation (http_stream, SSE): what the router and the shards agree on.

A session id of an emulation connection starts with the index of the shard that holds it, so that the
router sends each ``/emulation`` frame to that shard without asking anyone.
"""

from __future__ import annotations

from broker.ids import new_id

TRANSPORTS = frozenset({"http_stream", "sse"})


def session_id(shard_index: int) -> str:
    return f"{shard_index}-{new_id()}"


def shard_of_session(session: str) -> int | None:
    """The shard index a session id names; None for one that does not name any."""
    index, dash, _ = session.partition("-")
    return int(index) if dash and index.isdigit() and len(index) < 6 else None
