"""What each server API method does, and the one table that lists them.

Every method is a row of :data:`METHODS`: its params type (:mod:`router.api.params`) and either a route —
the user's shard or the channel's writer shard, asked with the params' ``to_shard()`` — or a handler of
its own for methods that gather every shard and merge the answers (:mod:`router.api.merge`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from broker import __version__, errors
from broker.channels import ChannelRules
from broker.config import Config
from broker.connections_filter import compile_connections_filter
from broker.errors import ClientError
from broker.hashing import shard_for_user, writer_for
from broker.ipc.control import RemoteError, ShardUnavailable, client_error
from broker.merge import merge_channels, merge_presence, merge_presence_stats
from broker.publication import api_publication
from router.api import across
from router.api import params as p
from router.api.access import ACCESS_PARAMS, STATUS_OPS, AccessParams, UserStatusParams
from router.api.http import batch_too_large
from router.api.merge import (
    first_client_error,
    limit_connections,
    merge_info,
    splice_connections,
    user_answer,
    with_unavailable_shards,
)
from router.cluster import Cluster
from router.user_index import UserIndexes

Params = dict[str, Any]
# What a client is told when a shard did not answer (the shard's own errors pass through as they are).
SHARD_UNAVAILABLE = errors.INTERNAL.with_message("shard unavailable")


log = logging.getLogger("switchboard.api")


class Route(enum.Enum):
    USER = "the user's shard"  # answers {} once the shard has done it
    WRITER = "the channel's writer shard"  # answers what the writer answers
    OWN = "a handler of its own"


class Context(Protocol):
    """What a method needs of the router: its config, its shards, and the shared channel counts."""

    cfg: Config
    cluster: Cluster
    rules: ChannelRules
    uid: str
    started_at: float
    across: across.Across | None  # the other nodes (Redis engine), or None alone
    user_indexes: UserIndexes  # the shards' connections by user, in shared memory

    def shards_with_subscribers(self, channel: str) -> list[int] | None: ...

    async def call(self, method: str, params: Any) -> Any: ...


Handler = Callable[[Context, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    params: Any  # a params type of router.api.params: from_json(params, rules)
    route: Route
    handler: Handler | None = None


async def ask_one(ctx: Context, index: int, method: str, params: Params) -> Params:
    try:
        result: Params = await ctx.cluster.ask(index, method, params)
    except (ShardUnavailable, RemoteError) as exc:
        raise client_error(exc, method, SHARD_UNAVAILABLE) from None
    return result


def raise_first_error(found: dict[int, RemoteError]) -> None:
    error = first_client_error(found)
    if error is not None:
        raise error


async def broadcast(ctx: Context, params: p.BroadcastParams) -> Params:
    channels = params.channels
    responses: list[Params | None] = [None] * len(channels)
    by_writer: dict[int, list[int]] = {}
    for position, channel in enumerate(channels):
        try:
            ctx.rules.validate_name(channel)
        except ClientError as err:
            responses[position] = {"error": {"code": err.code, "message": err.message}}
            continue
        by_writer.setdefault(writer_for(channel, ctx.cluster.size), []).append(position)

    async def one_writer(writer: int, positions: list[int]) -> None:
        # One request per writer shard, however many of the channels it writes.
        request = {**params.publication, "channels": [channels[i] for i in positions]}
        try:
            answers = (await ask_one(ctx, writer, "publish_many", request))["responses"]
        except ClientError as err:
            answers = [{"error": {"code": err.code, "message": err.message}}] * len(positions)
        for position, answer in zip(positions, answers, strict=True):
            responses[position] = answer

    await asyncio.gather(*(one_writer(w, positions) for w, positions in by_writer.items()))
    return {"responses": responses}


async def _gather_presence(
    ctx: Context, method: str, channel: str, merge: Callable[[Any], Params], nobody: Params
) -> Params:
    """Presence is where the subscribers are: only the shards the shared counts name are asked."""
    if not ctx.rules.options_for(channel).presence:
        raise errors.NOT_AVAILABLE()
    only = ctx.shards_with_subscribers(channel)
    if only == []:
        return nobody
    gathered = await ctx.cluster.gather(method, {"channel": channel}, only=only)
    raise_first_error(gathered.errors)
    return merge(gathered.results.values())


async def presence(ctx: Context, params: p.ChannelParams) -> Params:
    return await _gather_presence(ctx, "presence", params.channel, merge_presence, {"presence": {}})


async def presence_stats(ctx: Context, params: p.ChannelParams) -> Params:
    nobody = {"num_clients": 0, "num_users": 0}
    return await _gather_presence(ctx, "presence_stats", params.channel, merge_presence_stats, nobody)


async def history(ctx: Context, params: p.HistoryParams) -> Params:
    if not ctx.rules.options_for(params.channel).history_enabled:
        raise errors.NOT_AVAILABLE()
    found = await ask_one(ctx, writer_for(params.channel, ctx.cluster.size), "history", params.to_shard())
    return {
        "publications": [api_publication(pub) for pub in found["publications"]],
        "epoch": found["epoch"],
        "offset": found["offset"],
    }


async def history_remove(ctx: Context, params: p.ChannelParams) -> Params:
    if not ctx.rules.options_for(params.channel).history_enabled:
        raise errors.NOT_AVAILABLE()
    return await ask_one(
        ctx, writer_for(params.channel, ctx.cluster.size), "history_remove", params.to_shard()
    )


async def channels(ctx: Context, params: p.ChannelsParams) -> Params:
    gathered = await ctx.cluster.gather("channels", {"pattern": params.pattern})
    raise_first_error(gathered.errors)
    return merge_channels(gathered.results.values())


async def connections(ctx: Context, params: p.ConnectionsParams) -> orjson.Fragment:
    if params.expression:
        # Refused here (107, with the reason) before any shard sees it; shards check again.
        compile_connections_filter(params.expression, ctx.cfg)
    # The shards stop scanning when the router stops waiting for them.
    timeout = float(ctx.cfg.api_shard_timeout)
    shard_params = params.shard_params(timeout)
    index = shard_for_user(params.user, ctx.cluster.size)
    if index is not None and not params.expression and params.label_filter is None:
        # Read from the shard's shared memory, without a round trip, when it can be trusted.
        fragment = ctx.user_indexes.fragment(index, params.user)
        if fragment is not None:
            return orjson.Fragment(user_answer(fragment, params.limit, params.exclude_client, params.sort))
    if index is not None:
        # Every connection of a named user lives on that user's shard.
        try:
            answer = await ctx.cluster.ask_raw(index, "connections", shard_params, timeout)
        except (ShardUnavailable, RemoteError) as exc:
            raise client_error(exc, "connections", SHARD_UNAVAILABLE) from None
        return orjson.Fragment(answer.json)
    gathered = await ctx.cluster.gather("connections", shard_params, timeout, raw=True)
    raise_first_error(gathered.errors)
    parts = [gathered.results[i].json for i in sorted(gathered.results)]
    if params.limit or params.sort:
        answers = [orjson.loads(part) for part in parts]
        merged = orjson.dumps(limit_connections(answers, params.limit, params.sort))
    else:
        merged = splice_connections(parts)
    return orjson.Fragment(with_unavailable_shards(merged, gathered.missing))


async def info(ctx: Context, params: p.NoParams) -> Params:
    gathered = await ctx.cluster.gather("info", {"channel_names": True})
    node = merge_info(gathered.results, gathered.missing)
    node.update(
        {
            "uid": ctx.uid,
            "name": ctx.cfg.node_display_name,
            "version": __version__,
            "uptime": int(time.monotonic() - ctx.started_at),
        }
    )
    return {"nodes": [node]}


async def batch(ctx: Context, params: p.BatchParams) -> Params:
    """Several commands in one request; answered as top-level ``replies`` (no ``result``)."""
    if len(params.commands) > ctx.cfg.api_batch_max_size:
        raise batch_too_large(ctx.cfg, len(params.commands))
    commands = params.methods()

    async def one(method: str, method_params: Any) -> Params:
        try:
            if method == "batch":
                raise errors.METHOD_NOT_FOUND()
            return {method: await ctx.call(method, method_params)}
        except ClientError as err:
            return {"error": {"code": err.code, "message": err.message}}

    if params.parallel:
        replies = list(await asyncio.gather(*(one(m, mp) for m, mp in commands)))
    else:
        replies = [await one(m, mp) for m, mp in commands]
    return {"replies": replies}


async def access_change(ctx: Context, params: AccessParams) -> Params:
    """Session management: every shard applies the change and closes the connections it now refuses.

    With the Redis engine the change is also kept in Redis, where a node or shard that starts later
    finds it (every node that applies it writes it; the write is idempotent)."""
    store = ctx.across.access_store if ctx.across is not None else None
    if store is not None:
        try:
            await store.save(params.to_shard())
        except Exception as exc:
            log.error("could not keep %s in Redis: %r", params.to_shard().get("kind"), exc)
            raise errors.INTERNAL() from None
    gathered = await ctx.cluster.gather("access", params.to_shard())
    raise_first_error(gathered.errors)
    return {}


def _status_handler(op: str) -> Handler:
    async def handle(ctx: Context, params: UserStatusParams) -> Params:
        """Each user's status is kept by the user's shard (memory) or read there from Redis."""
        by_shard: dict[int, list[str]] = {}
        for user in params.users:
            by_shard.setdefault(shard_for_user(user, ctx.cluster.size) or 0, []).append(user)
        answers = await asyncio.gather(
            *(
                ask_one(ctx, index, "user_status", {"op": op, "users": users})
                for index, users in by_shard.items()
            )
        )
        if op != "get":
            return {}
        found = {s["user"]: s for answer in answers for s in answer.get("statuses", [])}
        return {"statuses": [found[user] for user in params.users if user in found]}

    return handle


METHODS: dict[str, Method] = {
    "publish": Method(p.PublishParams, Route.WRITER),
    "broadcast": Method(p.BroadcastParams, Route.OWN, broadcast),
    "subscribe": Method(p.SubscribeParams, Route.USER),
    "unsubscribe": Method(p.UnsubscribeParams, Route.USER),
    "refresh": Method(p.RefreshParams, Route.USER),
    "disconnect": Method(p.DisconnectParams, Route.USER),
    "presence": Method(p.ChannelParams, Route.OWN, presence),
    "presence_stats": Method(p.ChannelParams, Route.OWN, presence_stats),
    "history": Method(p.HistoryParams, Route.OWN, history),
    "history_remove": Method(p.ChannelParams, Route.OWN, history_remove),
    "channels": Method(p.ChannelsParams, Route.OWN, channels),
    "connections": Method(p.ConnectionsParams, Route.OWN, connections),
    "info": Method(p.NoParams, Route.OWN, info),
    "batch": Method(p.BatchParams, Route.OWN, batch),
    **{name: Method(params, Route.OWN, access_change) for name, params in ACCESS_PARAMS.items()},
    **{name: Method(UserStatusParams, Route.OWN, _status_handler(op)) for name, op in STATUS_OPS.items()},
}


async def run_method(ctx: Context, name: str, raw: Any, *, here_only: bool = False) -> Any:
    """One method call: unknown → 104, params that are not an object → 107, then the table's row.

    With other nodes (``ctx.across``) the methods that span nodes go through :mod:`router.api.across`,
    unless ``here_only`` (another node asked for this node's part).
    """
    method = METHODS.get(name)
    if method is None:
        raise errors.METHOD_NOT_FOUND()
    if not isinstance(raw, dict):
        raise errors.BAD_REQUEST()
    params = method.params.from_json(raw, ctx.rules)
    if ctx.across is not None and not here_only:
        spanning = across.HANDLERS.get(name)

        async def local(method_name: str, method_params: Any) -> Any:
            return await run_method(ctx, method_name, method_params, here_only=True)

        if spanning is not None:
            return await spanning(ctx.across, local, raw)
        if name in across.USER_COMMANDS:
            return await across.user_command(ctx.across, local, name, raw)
    if method.route is Route.USER:
        index = shard_for_user(params.user, ctx.cluster.size)
        if index is None:
            # all_users (v6 PRO): every shard does it to the connections it holds.
            gathered = await ctx.cluster.gather(name, params.to_shard())
            raise_first_error(gathered.errors)
            return {}
        await ask_one(ctx, index, name, params.to_shard())
        return {}
    if method.route is Route.WRITER:
        return await ask_one(ctx, writer_for(params.channel, ctx.cluster.size), name, params.to_shard())
    assert method.handler is not None
    return await method.handler(ctx, params)
