"""Server API methods as a shard executes them over its own connections.

The router validates parameters and decides which shards to ask; these functions read and change only
this shard's hub. They are synchronous: nothing here awaits between reading an index and acting on it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from broker import errors
from broker.cel import CelError, CompiledFilter, compile_filter
from broker.errors import Disconnect
from broker.protocol.state import CEL_GETTERS

if TYPE_CHECKING:
    from shards.main import Shard


@functools.lru_cache(maxsize=256)
def compiled(expression: str, max_length: int) -> CompiledFilter:
    return compile_filter(expression, CEL_GETTERS, max_length=max_length)


def connections(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    user = params.get("user") or ""
    expression = params.get("expression") or ""
    hub = shard.hub
    if not expression:
        found = hub.user_connections(user)
        return {"connections": {conn.state.client: conn.state.connection_info() for conn in found}}
    try:
        flt = compiled(expression, shard.cfg.connections_expression_max_length)
    except CelError as exc:
        raise errors.BAD_REQUEST.with_message(f"bad expression: {exc}") from None
    hints = flt.hints
    users: set[str] | frozenset[str] | None = hints.users
    if user:
        users = {user} if users is None or user in users else set()
    candidates = hub.candidates(users=users, clients=hints.clients, channels=hints.channels)
    matches = flt.matches
    return {
        "connections": {c.state.client: c.state.connection_info() for c in candidates if matches(c.state)}
    }


def disconnect(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    user = params.get("user") or ""
    client = params.get("client") or ""
    session = params.get("session") or ""
    whitelist = set(params.get("whitelist") or ())
    spec = params.get("disconnect") or {}
    reason = Disconnect(int(spec.get("code", errors.FORCE_DISCONNECT.code)), str(spec.get("reason", "")))
    if not spec:
        reason = errors.FORCE_DISCONNECT
    targets = [
        conn
        for conn in shard.hub.user_connections(user)
        if (not client or conn.state.client == client)
        and (not session or conn.state.session == session)
        and conn.state.client not in whitelist
    ]
    for conn in targets:
        shard.disconnect(conn, reason)  # type: ignore[arg-type]
    return {"disconnected": len(targets)}


def info(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = dict(shard.hub.stats())
    stats["index"] = shard.index
    stats["uptime"] = int(shard.uptime())
    stats["pid"] = shard.pid
    stats["rss"] = shard.rss_bytes()
    if params.get("channel_names"):
        stats["channels"] = list(shard.hub.by_channel)
    return stats


HANDLERS = {"connections": connections, "disconnect": disconnect, "info": info}
