"""Server API methods as a shard executes them over its own connections.

The router validates parameters and decides which shards to ask; these functions read and change only
this shard's hub. They are synchronous: nothing here awaits between reading an index and acting on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from broker import errors
from broker.connections_filter import Scan, ScanStopped, compile_connections_filter
from broker.engine.base import StreamPosition
from broker.errors import Disconnect
from broker.ipc.control import Raw
from broker.ipc.pubsub import Publication
from broker.merge import glob_matcher
from broker.protocol.connect import ttl_seconds
from broker.protocol.state import SOURCE_SERVER_API

if TYPE_CHECKING:
    from broker.config import Config
    from shards.main import Shard

log = logging.getLogger("switchboard.shard")


def connections(shard: Shard, params: dict[str, Any]) -> Raw | Awaitable[Raw]:
    """Connections matching ``user`` and/or ``expression``.

    A scan that fits in one slice is answered at once; a longer one continues in a task that yields to
    the event loop between slices, and stops at the request's deadline (``timeout`` seconds from now, the
    router's own wait) or when it runs over its budget (107).
    """
    user = params.get("user") or ""
    expression = params.get("expression") or ""
    hub = shard.hub
    if not expression:
        found = hub.user_connections(user)
        return _connections_answer(found)
    flt = compile_connections_filter(expression, shard.cfg)
    hints = flt.hints
    users: set[str] | frozenset[str] | None = hints.users
    if user:
        users = {user} if users is None or user in users else set()
    timeout = params.get("timeout")
    if not isinstance(timeout, int | float) or timeout <= 0:
        timeout = shard.cfg.api_shard_timeout
    scan = Scan(
        flt,
        list(hub.candidates(users=users, clients=hints.clients, channels=hints.channels)),
        state=_state,
        is_open=_is_open,
        max_cost=shard.cfg.connections_expression_max_cost,
        deadline=time.monotonic() + timeout,
    )
    if _run_slice(scan):
        return _connections_answer(scan.matched())
    return _finish_scan(scan)


async def _finish_scan(scan: Scan) -> Raw:
    while True:
        await asyncio.sleep(0)
        if _run_slice(scan):
            return _connections_answer(scan.matched())


def _run_slice(scan: Scan) -> bool:
    """One slice of the scan; a stopped scan is one log line and an error answer."""
    try:
        return scan.run_slice()
    except ScanStopped as exc:
        # The router has stopped waiting by now and lists this shard as unavailable.
        log.warning("connections scan stopped: %s", exc)
        raise errors.INTERNAL.with_message(f"connections scan stopped: {exc}") from None
    except errors.ClientError as err:
        log.warning("connections scan over budget: %s", err.message)
        raise


def _state(conn: Any) -> Any:
    return conn.state


def _is_open(conn: Any) -> bool:
    return not conn.closed


def _connections_answer(found: Iterable[Any]) -> Raw:
    return Raw(
        orjson.dumps({"connections": {conn.state.client: conn.state.connection_info() for conn in found}})
    )


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


def _b64(value: Any) -> bytes:
    if not value:
        return b""
    if not isinstance(value, str):
        raise errors.BAD_REQUEST()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BAD_REQUEST.with_message("bad base64") from None


def _payload(params: dict[str, Any], key: str) -> bytes | None:
    """``key`` (any JSON, kept as its raw JSON text) or ``b64<key>`` (base64 bytes); None when absent."""
    if params.get("b64" + key):
        return _b64(params["b64" + key])
    if key in params and params[key] is not None:
        return orjson.dumps(params[key])
    return None


def publication_params(publication: Publication) -> dict[str, Any]:
    """A client's publication as control-plane params (bytes as base64) for the channel's writer."""
    params: dict[str, Any] = {
        "channel": publication.channel,
        "b64data": base64.b64encode(publication.data).decode(),
    }
    if publication.kind:
        params["kind"] = publication.kind
    if publication.user is not None:
        params["client_info"] = {
            "user": publication.user,
            "client": publication.client,
            "b64conn_info": base64.b64encode(publication.conn_info).decode(),
            "b64chan_info": base64.b64encode(publication.chan_info).decode(),
        }
    return params


def publish(shard: Shard, params: dict[str, Any]) -> Any:
    """As the channel's writer: order and send a publication (from the API or from a client).

    Right after the writer (re)started the publication waits until it may be given an offset.
    """
    if not params.get("kind") and not shard.writing():
        return shard.until_writing(lambda: publish(shard, params))
    channel = params.get("channel")
    kind = str(params.get("kind", ""))
    data = _payload(params, "data")
    if kind:
        data = data or b""  # join / leave carry only the ClientInfo
    if not isinstance(channel, str) or not channel or data is None:
        raise errors.BAD_REQUEST()
    publication = Publication(channel, data, kind=kind)
    tags = params.get("tags")
    if tags:
        publication.tags = {str(k): str(v) for k, v in tags.items()}
    info = params.get("client_info")
    if isinstance(info, dict):
        publication.user = str(info.get("user", ""))
        publication.client = str(info.get("client", ""))
        publication.conn_info = _b64(info.get("b64conn_info"))
        publication.chan_info = _b64(info.get("b64chan_info"))
    idempotency_key = params.get("idempotency_key") or ""
    return shard.write_publication(
        publication, skip_history=bool(params.get("skip_history")), idempotency_key=str(idempotency_key)
    )


def publish_many(shard: Shard, params: dict[str, Any]) -> Any:
    """``broadcast`` to the channels this shard writes: one answer per channel, in order."""
    if not shard.writing():
        return shard.until_writing(lambda: publish_many(shard, params))
    responses: list[dict[str, Any]] = []
    for channel in params.get("channels") or []:
        try:
            responses.append({"result": publish(shard, {**params, "channel": channel})})
        except errors.ClientError as err:
            responses.append({"error": {"code": err.code, "message": err.message}})
    return {"responses": responses}


def wire_publication(publication: Publication) -> dict[str, Any]:
    """A stored publication as it travels between processes (bytes as base64)."""
    out: dict[str, Any] = {
        "b64data": base64.b64encode(publication.data).decode(),
        "offset": publication.offset,
    }
    if publication.tags:
        out["tags"] = publication.tags
    if publication.user is not None:
        out["info"] = {
            "user": publication.user,
            "client": publication.client,
            "b64conn_info": base64.b64encode(publication.conn_info).decode(),
            "b64chan_info": base64.b64encode(publication.chan_info).decode(),
        }
    return out


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


def history(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    """As the channel's writer: publications and the stream position (108 when history is off)."""
    channel = str(params.get("channel", ""))
    options = shard.history_options(channel)
    limit = params.get("limit") or 0
    if not isinstance(limit, int):
        raise errors.BAD_REQUEST()
    found = shard.engine.history(
        channel,
        limit=limit,
        since=_since(params),
        reverse=bool(params.get("reverse")),
        now=time.time(),
        history_meta_ttl=shard.meta_ttl(options),
    )
    return {
        "publications": [wire_publication(p) for p in found.publications],
        "epoch": found.position.epoch,
        "offset": found.position.offset,
    }


def history_remove(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params.get("channel", ""))
    shard.history_options(channel)
    shard.engine.remove_history(channel, now=time.time())
    return {}


def position(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params.get("channel", ""))
    options = shard.history_options(channel)
    top = shard.engine.position(channel, now=time.time(), history_meta_ttl=shard.meta_ttl(options))
    return {"offset": top.offset, "epoch": top.epoch}


def recover(shard: Shard, params: dict[str, Any]) -> Raw:
    """Publications a resubscribing client missed since its position, and whether it is whole again.

    After an outage many clients of a channel come back from the same position at once; the answer is
    kept (as JSON) while the stream's top is unchanged, so it is read and encoded once, not per client.
    """
    channel = str(params.get("channel", ""))
    options = shard.history_options(channel)
    since = _since(params) or StreamPosition(0, "")
    now = time.time()
    meta_ttl = shard.meta_ttl(options)
    limit = int(params.get("limit") or 0)
    top = shard.engine.position(channel, now=now, history_meta_ttl=meta_ttl)
    key = (channel, since.offset, since.epoch, limit, options.force_recovery_mode)
    cached = shard.recovery_answers.get(key)
    if cached is not None and cached[0] == top:
        return cached[1]
    if options.force_recovery_mode == "cache":
        outcome = shard.engine.recover_cache(channel, since=since, now=now, history_meta_ttl=meta_ttl)
    else:
        outcome = shard.engine.recover(channel, since=since, limit=limit, now=now, history_meta_ttl=meta_ttl)
    publications = outcome.publications if outcome.recovered else []
    answer = Raw(
        orjson.dumps(
            {
                "publications": [wire_publication(p) for p in publications],
                "epoch": outcome.position.epoch,
                "offset": outcome.position.offset,
                "recovered": outcome.recovered,
            }
        )
    )
    if len(shard.recovery_answers) >= RECOVERY_ANSWERS_KEPT:
        shard.recovery_answers.pop(next(iter(shard.recovery_answers)))
    shard.recovery_answers[key] = (top, answer)
    return answer


RECOVERY_ANSWERS_KEPT = 64


def _targets(shard: Shard, params: dict[str, Any]) -> list[Any]:
    user = params.get("user") or ""
    client = params.get("client") or ""
    session = params.get("session") or ""
    return [
        conn
        for conn in shard.hub.user_connections(user)
        if (not client or conn.state.client == client) and (not session or conn.state.session == session)
    ]


def subscribe(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    """Server-side subscription of a user's connections (API ``subscribe``)."""
    channel = str(params["channel"])
    chan_info = _payload(params, "info")
    data = _payload(params, "data")
    expire_at = params.get("expire_at") or 0
    for conn in _targets(shard, params):
        state = conn.state
        if channel in state.channels:
            continue
        if chan_info is not None:
            if state.chan_info is None:
                state.chan_info = {}
            state.chan_info[channel] = chan_info
        if expire_at:
            if state.sub_expires is None:
                state.sub_expires = {}
            state.sub_expires[channel] = float(expire_at)
            shard.sub_expiry_changed(conn, channel)
        push: dict[str, Any] = {}
        if data is not None:
            push["data"] = data
        body = {"channel": channel, "subscribe": push}
        shard.subscribe(conn, channel, SOURCE_SERVER_API, functools.partial(conn.send_push, body))
    return {}


def unsubscribe(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params["channel"])
    for conn in _targets(shard, params):
        shard.server_unsubscribe(conn, channel, 2000, "server unsubscribe")
    return {}


def refresh(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    """API ``refresh``: a new expiry (or none) and info for a user's connections, or expire them now."""
    now = time.time()
    info = _payload(params, "info")
    expire_at = float(params.get("expire_at") or 0)
    for conn in _targets(shard, params):
        if params.get("expired"):
            shard.disconnect(conn, errors.CONNECTION_EXPIRED)
            continue
        conn.state.expire_at = expire_at
        if info is not None:
            conn.state.info = info
        shard.expiry_changed(conn)
        body: dict[str, Any] = {}
        if expire_at:
            body = {"expires": True, "ttl": ttl_seconds(expire_at, now)}
        conn.send_push({"refresh": body})
    return {}


def presence(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    """This shard's part of a channel's presence: ClientInfo of every local subscriber."""
    channel = str(params.get("channel", ""))
    members = shard.hub.by_channel.get(channel, ())
    return {"presence": {conn.state.client: _client_info_json(conn.state, channel) for conn in members}}


def _client_info_json(state: Any, channel: str) -> dict[str, Any]:
    info: dict[str, Any] = {"user": state.user, "client": state.client}
    if state.info:
        info["conn_info"] = orjson.Fragment(state.info)
    if state.chan_info and channel in state.chan_info:
        info["chan_info"] = orjson.Fragment(state.chan_info[channel])
    return info


def presence_stats(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params.get("channel", ""))
    members = shard.hub.by_channel.get(channel, ())
    users = {conn.state.user for conn in members}
    anonymous = "" in users
    return {"num_clients": len(members), "num_named_users": len(users) - anonymous, "anonymous": anonymous}


def channels(shard: Shard, params: dict[str, Any]) -> dict[str, Any]:
    """Local subscriber counts per channel, optionally filtered by a glob ``pattern``."""
    pattern = params.get("pattern") or ""
    counts = {channel: len(members) for channel, members in shard.hub.by_channel.items()}
    if pattern:
        matcher = glob_matcher(pattern)
        counts = {channel: n for channel, n in counts.items() if matcher.match(channel)}
    return {"channels": counts}


def shard_started(shard: Shard, params: dict[str, Any]) -> Any:
    return shard.peer_restarted(int(params.get("index", -1)), str(params.get("boot", "")))


def warm_up(cfg: Config) -> None:
    """Build the CEL parser at boot rather than on the first API request (it takes ~0.5 s)."""
    compile_connections_filter("true", cfg)


HANDLERS = {
    "connections": connections,
    "disconnect": disconnect,
    "info": info,
    "publish": publish,
    "publish_many": publish_many,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "refresh": refresh,
    "presence": presence,
    "presence_stats": presence_stats,
    "channels": channels,
    "history": history,
    "history_remove": history_remove,
    "position": position,
    "recover": recover,
    "shard_started": shard_started,
}
