"""What a shard's peers ask it: the writer's answers about its channels, and boot announcements.

Every channel has one writer shard (``broker.hashing.writer_for``). Other shards ask it to order their
clients' publications (``publish``), for history, stream positions and recovery; every shard answers for
its own subscribers' presence; a restarted shard announces itself (``shard_started``). The router asks the
writer some of these too (publish, history, presence): ``shards.router_requests`` lists them among its own.
A handler reads and changes only this shard's state and runs without awaiting in between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Mapping
from typing import Any, Protocol

import orjson

from broker import errors
from broker.access.rules import AccessRules
from broker.engine.base import RecoveryResult, StreamPosition
from broker.ipc.control import Raw
from broker.protocol.state import ConnectionState
from broker.publication import client_info_json, publication_from_params, wire_publication
from shards.writer import ChannelWriter


class Member(Protocol):
    @property
    def state(self) -> ConnectionState: ...


class ChannelMembers(Protocol):
    @property
    def by_channel(self) -> Mapping[str, Collection[Member]]: ...


class PeerHost(Protocol):
    """What a peer's question needs of a shard: its writer, its subscribers, and its restart handling."""

    @property
    def writer(self) -> ChannelWriter: ...

    @property
    def hub(self) -> ChannelMembers: ...

    @property
    def access(self) -> AccessRules: ...

    def peer_restarted(self, index: int, boot: str) -> Awaitable[dict[str, Any]]: ...


def publish(host: PeerHost, params: dict[str, Any]) -> Any:
    """As the channel's writer: order and send a publication (from the API or from a client).

    Right after the writer (re)started the publication waits until it may be given an offset.
    """
    writer = host.writer
    if not params.get("kind") and not writer.writing():
        return writer.until_writing(lambda: publish(host, params))
    publication = publication_from_params(params)
    idempotency_key = params.get("idempotency_key") or ""
    return writer.write_publication(
        publication, skip_history=bool(params.get("skip_history")), idempotency_key=str(idempotency_key)
    )


def _since(params: dict[str, Any]) -> StreamPosition | None:
    since = params.get("since")
    if since is None:
        return None
    if not isinstance(since, dict):
        raise errors.BAD_REQUEST()
    offset = since.get("offset") or 0
    epoch = since.get("epoch") or ""
    if not isinstance(offset, int) or offset < 0 or not isinstance(epoch, str):
        raise errors.BAD_REQUEST()
    return StreamPosition(offset, epoch)


async def history(host: PeerHost, params: dict[str, Any]) -> dict[str, Any]:
    """As the channel's writer: publications and the stream position (108 when history is off)."""
    channel = str(params.get("channel", ""))
    host.writer.history_options(channel)  # 108 before the parameters are looked at
    limit = params.get("limit") or 0
    if not isinstance(limit, int):
        raise errors.BAD_REQUEST()
    found = await host.writer.history(
        channel, limit=limit, since=_since(params), reverse=bool(params.get("reverse"))
    )
    return {
        "publications": [wire_publication(p) for p in found.publications],
        "epoch": found.position.epoch,
        "offset": found.position.offset,
    }


async def position(host: PeerHost, params: dict[str, Any]) -> dict[str, Any]:
    top = await host.writer.position(str(params.get("channel", "")))
    return {"offset": top.offset, "epoch": top.epoch, "boot": host.writer.boot}


async def recover(host: PeerHost, params: dict[str, Any]) -> Raw:
    """Publications a resubscribing client missed since its position, and whether it is whole again."""
    channel = str(params.get("channel", ""))
    host.writer.history_options(channel)
    since = _since(params) or StreamPosition(0, "")
    boot = host.writer.boot

    def answer(outcome: RecoveryResult) -> Raw:
        publications = outcome.publications if outcome.recovered else []
        return Raw(
            orjson.dumps(
                {
                    "publications": [wire_publication(p) for p in publications],
                    "epoch": outcome.position.epoch,
                    "offset": outcome.position.offset,
                    "recovered": outcome.recovered,
                    "boot": boot,
                }
            )
        )

    return await host.writer.recover(channel, since, int(params.get("limit") or 0), answer)


def presence(host: PeerHost, params: dict[str, Any]) -> dict[str, Any]:
    """This shard's part of a channel's presence: ClientInfo of every local subscriber."""
    channel = str(params.get("channel", ""))
    members = host.hub.by_channel.get(channel, ())
    return {"presence": {conn.state.client: _presence_entry(conn.state, channel) for conn in members}}


def _presence_entry(state: ConnectionState, channel: str) -> dict[str, Any]:
    chan_info = state.chan_info.get(channel, b"") if state.chan_info else b""
    return client_info_json(state.user, state.client, state.info or b"", chan_info)


def presence_stats(host: PeerHost, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params.get("channel", ""))
    members = host.hub.by_channel.get(channel, ())
    users = {conn.state.user for conn in members}
    anonymous = "" in users
    return {"num_clients": len(members), "num_named_users": len(users) - anonymous, "anonymous": anonymous}


def shard_started(host: PeerHost, params: dict[str, Any]) -> Any:
    return host.peer_restarted(int(params.get("index", -1)), str(params.get("boot", "")))


def access_rules(host: PeerHost, params: dict[str, Any]) -> Any:
    """Every session management entry this shard holds, for a shard that just started."""
    return {"entries": host.access.snapshot()}


PEER_HANDLERS = {
    "access_rules": access_rules,
    "publish": publish,
    "presence": presence,
    "presence_stats": presence_stats,
    "history": history,
    "position": position,
    "recover": recover,
    "shard_started": shard_started,
}
