"""Server API methods as a shard executes them for the router, over its own connections.

The router validates parameters and decides which shards to ask; these functions read and change only
this shard's hub. They are synchronous: nothing here awaits between reading an index and acting on it.
The writer's answers the router shares with peers (publish, history, presence) live in
``shards.peer_requests``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from broker import errors
from broker.access.rules import AccessRules, BadEntry
from broker.access.status import UserStatusStore
from broker.config import Config
from broker.connections_filter import Scan, ScanStopped, compile_connections_filter
from broker.errors import Disconnect
from broker.ipc.control import Raw
from broker.label_filter import compile_label_filter
from broker.merge import glob_matcher
from broker.metrics.counters import ShardCounters
from broker.protocol.connect import ttl_seconds
from broker.protocol.state import SOURCE_SERVER_API
from broker.publication import payload
from shards.hub import Hub
from shards.peer_requests import PeerHost, history, presence, presence_stats, publish


class RouterHost(PeerHost, Protocol):
    """What the router's requests need of a shard."""

    @property
    def cfg(self) -> Config: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def index(self) -> int: ...

    @property
    def access(self) -> AccessRules: ...

    @property
    def statuses(self) -> UserStatusStore: ...

    async def user_is_online(self, user: str) -> bool: ...

    @property
    def pid(self) -> int: ...

    @property
    def counters(self) -> ShardCounters: ...

    @property
    def loop_lag(self) -> float: ...

    def queued_bytes(self) -> int: ...

    def uptime(self) -> float: ...

    def disconnect(self, conn: Any, reason: Disconnect) -> None: ...

    def subscribe(
        self, conn: Any, channel: str, source: int, ready: Callable[[], None] | None = None
    ) -> None: ...

    def server_unsubscribe(self, conn: Any, channel: str, code: int, reason: str) -> None: ...

    def expiry_changed(self, conn: Any) -> None: ...

    def sub_expiry_changed(self, conn: Any, channel: str) -> None: ...

    @property
    def emulations(self) -> dict[str, Any]: ...


log = logging.getLogger("switchboard.shard")


def connections(shard: RouterHost, params: dict[str, Any]) -> Raw | Awaitable[Raw]:
    """Connections matching ``user`` and/or ``expression``.

    A scan that fits in one slice is answered at once; a longer one continues in a task that yields to
    the event loop between slices, and stops at the request's deadline (``timeout`` seconds from now, the
    router's own wait) or when it runs over its budget (107).
    """
    user = params.get("user") or ""
    expression = params.get("expression") or ""
    answer = _Answer(params.get("limit") or 0, params.get("exclude_client") or "", params.get("sort") or "")
    hub = shard.hub
    labelled = _labelled(params.get("label_filter"))
    if not expression and user:
        found = hub.user_connections(user)
        if labelled is None:
            return answer.of(found)
        return answer.of([conn for conn in found if labelled(conn)])
    # A label filter alone scans like the expression "true": in slices, within the deadline.
    flt = compile_connections_filter(expression or "true", shard.cfg)
    hints = flt.hints
    users: set[str] | frozenset[str] | None = hints.users
    if user:
        users = {user} if users is None or user in users else set()
    timeout = params.get("timeout")
    if not isinstance(timeout, int | float) or timeout <= 0:
        timeout = shard.cfg.api_shard_timeout
    scan = Scan(
        flt,
        list(
            hub.candidates(
                users=users,
                clients=hints.clients,
                channels=hints.channels,
                app_names=hints.app_names,
                transports=hints.transports,
            )
        ),
        state=_state,
        is_open=_is_open if labelled is None else lambda conn: not conn.closed and labelled(conn),
        max_cost=shard.cfg.connections_expression_max_cost,
        deadline=time.monotonic() + timeout,
    )
    if _run_slice(scan):
        return answer.of(scan.matched())
    return _finish_scan(scan, answer)


async def _finish_scan(scan: Scan, answer: _Answer) -> Raw:
    while True:
        await asyncio.sleep(0)
        if _run_slice(scan):
            return answer.of(scan.matched())


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


def _labelled(spec: Any) -> Callable[[Any], bool] | None:
    """The label filter as a test of a connection (checked again here: shards trust no sender)."""
    if not spec:
        return None
    match = compile_label_filter(spec)
    return lambda conn: match(conn.state.labels or _NO_LABELS)


_NO_LABELS: dict[str, str] = {}


def _state(conn: Any) -> Any:
    return conn.state


def _is_open(conn: Any) -> bool:
    return not conn.closed


@dataclass(frozen=True, slots=True)
class _Answer:
    """How matches become the answer: ``exclude_client`` left out, ordered by ``sort``, and with a
    ``limit`` at most that many described (the costly part) and ``total`` counting them all."""

    limit: int = 0
    exclude_client: str = ""
    sort: str = ""

    def of(self, found: Iterable[Any]) -> Raw:
        matched = [conn for conn in found if conn.state.client != self.exclude_client]
        if self.sort:
            matched.sort(key=lambda conn: conn.state.connected_at, reverse=self.sort.startswith("-"))
        kept = matched[: self.limit] if self.limit else matched
        answer: dict[str, Any] = {
            "connections": {conn.state.client: conn.state.connection_info() for conn in kept}
        }
        if self.limit:
            answer["total"] = len(matched)
        return Raw(orjson.dumps(answer))


def disconnect(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    whitelist = set(params.get("whitelist") or ())
    spec = params.get("disconnect") or {}
    reason = Disconnect(int(spec.get("code", errors.FORCE_DISCONNECT.code)), str(spec.get("reason", "")))
    if not spec:
        reason = errors.FORCE_DISCONNECT
    targets = [conn for conn in _targets(shard, params) if conn.state.client not in whitelist]
    for conn in targets:
        shard.disconnect(conn, reason)
    return {"disconnected": len(targets)}


def info(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    stats: dict[str, Any] = dict(shard.hub.stats())
    stats["index"] = shard.index
    stats["uptime"] = int(shard.uptime())
    stats["pid"] = shard.pid
    stats["rss"] = rss_bytes()
    if params.get("channel_names"):
        stats["channels"] = list(shard.hub.by_channel)
    return stats


def metrics(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """Everything a Prometheus scrape shows of this shard, in one answer: ``info``'s counts (with the
    channel names, so that the router counts a channel on several shards once) and the counters."""
    answer = info(shard, {"channel_names": True})
    answer["counters"] = shard.counters.snapshot()
    answer["queue_bytes"] = shard.queued_bytes()
    answer["loop_lag"] = shard.loop_lag
    return answer


async def publish_many(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """``broadcast`` to the channels this shard writes: one answer per channel, in order."""
    if not shard.writer.writing():
        await shard.writer.until_writing(lambda: None)
    responses: list[dict[str, Any]] = []
    for channel in params.get("channels") or []:
        try:
            responses.append({"result": await publish(shard, {**params, "channel": channel})})
        except errors.ClientError as err:
            responses.append({"error": {"code": err.code, "message": err.message}})
    return {"responses": responses}


async def history_remove(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params.get("channel", ""))
    await shard.writer.remove_history(channel)
    return {}


def _targets(shard: RouterHost, params: dict[str, Any]) -> list[Any]:
    """The connections a targeted operation is for: the user's (or, with ``all_users``, every one this
    shard holds), narrowed by ``client``, ``session`` and ``label_filter``."""
    user = params.get("user") or ""
    client = params.get("client") or ""
    session = params.get("session") or ""
    labelled = _labelled(params.get("label_filter"))
    pool: Iterable[Any] = (
        list(shard.hub.by_client.values()) if params.get("all_users") else shard.hub.user_connections(user)
    )
    return [
        conn
        for conn in pool
        if (not client or conn.state.client == client)
        and (not session or conn.state.session == session)
        and (labelled is None or labelled(conn))
    ]


def subscribe(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """Server-side subscription of a user's connections (API ``subscribe``)."""
    channel = str(params["channel"])
    chan_info = payload(params, "info")
    data = payload(params, "data")
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


def unsubscribe(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    channel = str(params["channel"])
    for conn in _targets(shard, params):
        shard.server_unsubscribe(conn, channel, 2000, "server unsubscribe")
    return {}


def refresh(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """API ``refresh``: a new expiry (or none) and info for a user's connections, or expire them now."""
    now = time.time()
    info = payload(params, "info")
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


def channels(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """Local subscriber counts per channel, optionally filtered by a glob ``pattern``."""
    pattern = params.get("pattern") or ""
    counts = {channel: len(members) for channel, members in shard.hub.by_channel.items()}
    if pattern:
        matcher = glob_matcher(pattern)
        counts = {channel: n for channel, n in counts.items() if matcher.match(channel)}
    return {"channels": counts}


def rss_bytes() -> int:
    """This process's resident memory (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def warm_up(cfg: Config) -> None:
    """Build the CEL parser at boot rather than on the first API request (it takes ~0.5 s)."""
    compile_connections_filter("true", cfg)


def emulation(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """A client's frame that came by ``/emulation``, for the emulation connection of its session."""
    conn = shard.emulations.get(str(params.get("session", "")))
    if conn is None:
        return {"found": False}
    data = params.get("data")
    if isinstance(data, str):
        frame = data.encode()
    else:
        try:
            frame = base64.b64decode(str(params.get("b64data", "")), validate=True)
        except ValueError:
            raise errors.BAD_REQUEST() from None
    conn.receive_frame(frame)
    return {"found": True}


def access(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """A session management change: keep it, and close the connections here that it now refuses."""
    rules = shard.access
    try:
        rules.apply(params)
    except BadEntry as exc:
        raise errors.BAD_REQUEST.with_message(str(exc)) from None
    user = params.get("user")
    candidates = (
        shard.hub.user_connections(user) if isinstance(user, str) else list(shard.hub.by_client.values())
    )
    now = time.time()
    closed = 0
    for conn in list(candidates):
        state = conn.state
        refusal = rules.refuses(state.user, state.token_uid, state.token_issued_at, now)
        # A refused subscription token ends its connection too, as an invalid one would.
        if refusal is None and _holds_refused_subscription_token(rules, state, now):
            refusal = errors.INVALID_TOKEN
        if refusal is not None:
            shard.disconnect(conn, refusal)
            closed += 1
    return {"disconnected": closed}


async def user_status(shard: RouterHost, params: dict[str, Any]) -> dict[str, Any]:
    """``update`` (last active now), ``delete``, or ``get`` the status of users whose shard this is."""
    users = params.get("users")
    op = params.get("op")
    if not isinstance(users, list) or not all(isinstance(u, str) and u for u in users):
        raise errors.BAD_REQUEST.with_message("users must be a list of user ids")
    store = shard.statuses
    now = int(time.time())
    if op == "update":
        await store.set_active(users, now)
        return {}
    if op == "delete":
        await store.delete(users)
        return {}
    if op != "get":
        raise errors.BAD_REQUEST()
    stored = await store.get(users)
    statuses = []
    for user in users:
        active, online = stored.get(user, (0, 0))
        if await shard.user_is_online(user):
            online = now  # connected right now: online is now, not when it was last written
        statuses.append({"user": user, "active": active, "online": online})
    return {"statuses": statuses}


def _holds_refused_subscription_token(rules: AccessRules, state: Any, now: float) -> bool:
    tokens = state.sub_tokens
    return bool(tokens) and any(
        rules.refuses_subscription_token(state.user, channel, uid, issued_at, now)
        for channel, (uid, issued_at) in tokens.items()
    )


ROUTER_HANDLERS = {
    "user_status": user_status,
    "access": access,
    "emulation": emulation,
    "connections": connections,
    "disconnect": disconnect,
    "info": info,
    "metrics": metrics,
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
}
