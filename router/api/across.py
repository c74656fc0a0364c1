"""Server API methods over every node (the Redis engine): what changes when a node is not alone.

Each handler runs the method on this node as it would alone (``local``, the single-node table of
:mod:`router.api.methods`) and adds the other nodes through :class:`router.nodes.Nodes`:

* ``disconnect`` / ``unsubscribe`` / ``subscribe`` / ``refresh`` and the session management changes
  (``revoke_token``, ``invalidate_user_tokens``, ``block_user``, ``unblock_user``) — done here, and sent
  to every other node as a command (each does it to the connections it holds);
* ``connections`` by ``user`` — only the nodes the user → nodes index in Redis names; by
  ``expression`` — every live node; one deadline (``api_node_timeout``), and the nodes that did not
  answer are listed in ``unavailable_nodes`` instead of failing the call;
* ``channels`` — merged over the live nodes; ``info`` — this node first, then every live node as it
  last described itself;
* ``presence`` / ``presence_stats`` — read from Redis in one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from broker import errors
from broker.access.redis_store import RedisAccessStore
from broker.channels import ChannelRules
from broker.config import Config
from broker.connections_filter import compile_connections_filter
from broker.engine.presence import PresenceManager
from broker.engine.redis_users import RedisUsers
from broker.label_filter import compile_label_filter
from broker.publication import client_info_json
from router.api.merge import limit_connections, splice_connections
from router.nodes import Asked, Nodes

log = logging.getLogger("switchboard.api")

Params = dict[str, Any]
Local = Callable[[str, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Across:
    """What the handlers need: the config, the channel rules, the other nodes, and Redis."""

    cfg: Config
    rules: ChannelRules
    nodes: Nodes
    users: RedisUsers
    presence_engine: PresenceManager
    access_store: RedisAccessStore | None = None  # session management entries, for nodes that start later


async def user_command(ctx: Across, local: Local, name: str, raw: Params) -> Any:
    result = await local(name, raw)
    try:
        await ctx.nodes.tell_others(name, raw)
    except Exception as exc:
        log.error("could not send %s to the other nodes: %r", name, exc)
        raise errors.INTERNAL() from None
    return result


async def connections(ctx: Across, local: Local, raw: Params) -> orjson.Fragment:
    user = raw.get("user") if isinstance(raw.get("user"), str) else ""
    expression = raw.get("expression") if isinstance(raw.get("expression"), str) else ""
    if expression:
        compile_connections_filter(expression, ctx.cfg)  # 107 here, before any node sees it
    if raw.get("label_filter"):
        compile_label_filter(raw["label_filter"])
    timeout = float(ctx.cfg.api_node_timeout)
    nodes = ctx.nodes
    # This node's part is asked at once, beside the index lookup (its connections are always asked:
    # one admitted while Redis did not answer is here but not in the index).
    here = asyncio.ensure_future(local("connections", raw))
    try:
        if user:
            try:
                holders = await ctx.users.nodes_of(user)
                others = [uid for uid in holders if uid != nodes.uid]
            except Exception as exc:
                log.warning("user index unavailable (%r); asking every node for %r", exc, user)
                others = [node.uid for node in nodes.live()]
        else:
            others = [node.uid for node in nodes.live()]
        asked = await nodes.ask_each(others, "connections", raw, timeout)
        mine = await here
    finally:
        if not here.done():
            here.cancel()
    _raise_first(asked)
    answers = [orjson.loads(_raw_json(mine)), *(asked.results[uid] for uid in others if uid in asked.results)]
    limit = raw.get("limit") or 0
    sort = raw.get("sort") or ""
    if limit or sort:
        merged = orjson.dumps(limit_connections(answers, limit, sort))
    else:
        merged = splice_connections(
            [orjson.dumps({"connections": a.get("connections", {})}) for a in answers]
        )
    extra: Params = {}
    # A shard of another node that did not answer is named with its node: "<node uid>/<index>".
    missing_shards = list(answers[0].get("unavailable_shards", ()))
    for uid in others:
        missing_shards += [f"{uid}/{i}" for i in (asked.results.get(uid) or {}).get("unavailable_shards", ())]
    if missing_shards:
        extra["unavailable_shards"] = missing_shards
    if asked.missing:
        extra["unavailable_nodes"] = asked.unavailable()
    if extra:
        merged = merged[:-1] + b"," + orjson.dumps(extra)[1:]
    return orjson.Fragment(merged)


async def channels(ctx: Across, local: Local, raw: Params) -> Params:
    others = [node.uid for node in ctx.nodes.live()]
    mine, asked = await asyncio.gather(
        local("channels", raw), ctx.nodes.ask_each(others, "channels", raw, float(ctx.cfg.api_node_timeout))
    )
    _raise_first(asked)
    counts: dict[str, int] = {}
    for answer in (mine, *asked.results.values()):
        for channel, entry in answer.get("channels", {}).items():
            counts[channel] = counts.get(channel, 0) + int(entry.get("num_clients", 0))
    merged: Params = {"channels": {channel: {"num_clients": n} for channel, n in counts.items()}}
    if asked.missing:
        merged["unavailable_nodes"] = asked.unavailable()
    return merged


async def info(ctx: Across, local: Local, raw: Params) -> Params:
    mine: Params = await local("info", raw)
    return {"nodes": mine["nodes"] + [node.info for node in ctx.nodes.live() if node.info]}


async def presence(ctx: Across, local: Local, raw: Params) -> Params:
    channel = _channel(ctx, raw)
    found = await ctx.presence_engine.presence(channel, now=0)
    entries = {
        client: client_info_json(info.user, info.client, info.conn_info, info.chan_info)
        for client, info in found.items()
    }
    return {"presence": entries}


async def presence_stats(ctx: Across, local: Local, raw: Params) -> Params:
    stats = await ctx.presence_engine.presence_stats(_channel(ctx, raw), now=0)
    return {"num_clients": stats.num_clients, "num_users": stats.num_users}


def _channel(ctx: Across, raw: Params) -> str:
    channel = raw.get("channel")
    if not isinstance(channel, str) or not channel:
        raise errors.BAD_REQUEST.with_message("channel required")
    ctx.rules.validate_name(channel)
    if not ctx.rules.options_for(channel).presence:
        raise errors.NOT_AVAILABLE()
    return channel


def _raise_first(asked: Asked) -> None:
    for uid in sorted(asked.errors):
        raise asked.errors[uid].to_client_error()


def _raw_json(value: Any) -> bytes:
    return orjson.dumps(value)  # a Fragment (a local answer spliced from shards) is written as it is


# Done here and sent to every other node: commands on users' connections, and session management
# changes (every node refuses a revoked token, not only the one that was told).
USER_COMMANDS = frozenset(
    {"disconnect", "unsubscribe", "subscribe", "refresh", "revoke_token", "invalidate_user_tokens"}
    | {"block_user", "unblock_user"}
)
HANDLERS: dict[str, Callable[[Across, Local, Params], Awaitable[Any]]] = {
    "connections": connections,
    "channels": channels,
    "info": info,
    "presence": presence,
    "presence_stats": presence_stats,
}
