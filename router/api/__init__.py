"""The server HTTP API as the router serves it: authentication, decoding, routing to shards, merging.

Two styles share one set of methods (reference §6): ``POST /api/<method>`` with the params as the body,
and the legacy ``POST /api`` with ``{"method": ..., "params": ...}`` commands, several of them
newline-delimited. A method that concerns one user goes to that user's shard only; the others are
gathered from every shard and merged here.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson

from broker import __version__, errors
from broker.channels import ChannelRules
from broker.config import Config
from broker.connections_filter import compile_connections_filter
from broker.errors import ClientError
from broker.hashing import shard_for_user, writer_for
from broker.ipc.channel_counts import open_counts
from broker.ipc.control import RemoteError, ShardUnavailable, client_error
from broker.ipc.shm_index import CountIndex
from broker.jsonlimits import loads_writable
from broker.merge import merge_channels, merge_presence, merge_presence_stats
from broker.protocol.publications import publication_from_wire
from router.api.merge import first_client_error, splice_connections, with_unavailable_shards
from router.cluster import Cluster
from router.http import Request

log = logging.getLogger("switchboard.api")
# What a client is told when a shard did not answer (the shard's own errors pass through as they are).
SHARD_UNAVAILABLE = errors.INTERNAL.with_message("shard unavailable")

# Method enum of the legacy API; names are matched case-insensitively.
METHOD_NUMBERS = {
    "publish": 0,
    "broadcast": 1,
    "unsubscribe": 2,
    "disconnect": 3,
    "presence": 4,
    "presence_stats": 5,
    "history": 6,
    "history_remove": 7,
    "channels": 8,
    "info": 9,
    "rpc": 10,
    "subscribe": 11,
    "refresh": 12,
    "connections": 14,
}
_METHOD_BY_NUMBER = {number: name for name, number in METHOD_NUMBERS.items()}

# Errors as HTTP statuses when the client asks for transport error mode.
_TRANSPORT_STATUS = {100: 500, 102: 404, 104: 404, 107: 400, 108: 400, 112: 416, 113: 409}

Params = dict[str, Any]


def api_publication(wire: Params) -> Params:
    """A stored publication (base64 fields between processes) in the server API's JSON shape."""
    pub = publication_from_wire(wire)
    pub["data"] = _json_or_b64(pub["data"])
    info = pub.get("info")
    if info is not None:
        for key in ("conn_info", "chan_info"):
            if key in info:
                info[key] = _json_or_b64(info[key])
    return pub


def _json_or_b64(raw: bytes) -> Any:
    """Raw JSON as it is; binary (from protobuf clients) is not JSON, so it is sent as base64 text."""
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return base64.b64encode(raw).decode()
    return orjson.Fragment(raw)


def _string(params: Params, key: str, required: bool = False) -> str:
    value = params.get(key)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise errors.BAD_REQUEST.with_message(f"{key} must be a string")
    if required and not value:
        raise errors.BAD_REQUEST.with_message(f"{key} required")
    return value


class Api:
    def __init__(self, cfg: Config, cluster: Cluster) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.uid = str(uuid.uuid4())
        self.started_at = time.monotonic()
        self.rules = ChannelRules.from_config(cfg)
        self._counts: CountIndex | None = None
        compile_connections_filter("true", cfg)  # builds the CEL parser now
        self._methods: dict[str, Callable[[Params], Awaitable[Any]]] = {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "refresh": self.refresh,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "channels": self.channels,
            "history": self.history,
            "history_remove": self.history_remove,
            "connections": self.connections,
            "disconnect": self.disconnect,
            "info": self.info,
            "batch": self.batch,
        }

    # -- HTTP entry points -----------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self.cfg.api_insecure:
            return True
        key = self.cfg.api_key
        if not key:
            return False
        given = request.header("x-api-key")
        if not given:
            scheme, _, value = request.header("authorization").partition(" ")
            if scheme.lower() == "apikey":
                given = value.strip()
        if not given:
            given = request.query_arg("api_key") or ""
        return bool(given) and hmac.compare_digest(given.encode(), key.encode())

    async def serve_method(self, method: str, request: Request) -> tuple[int, bytes]:
        """``POST /api/<method>``: the body is the params object."""
        handler = self._methods.get(method)
        if handler is None:
            return HTTPStatus.NOT_FOUND, b"404 page not found"
        body = request.body.strip()
        try:
            params = loads_writable(body) if body else {}
        except ValueError:  # malformed, or nested too deeply to pass on
            return HTTPStatus.BAD_REQUEST, b"Bad Request"
        transport_mode = (
            self.cfg.api_error_mode == "transport" or request.header("x-centrifugo-error-mode") == "transport"
        )
        try:
            if not isinstance(params, dict):
                raise errors.BAD_REQUEST()
            result = await handler(params)
            if method == "batch":
                return HTTPStatus.OK, orjson.dumps(result)
        except ClientError as err:
            if transport_mode:
                status = _TRANSPORT_STATUS.get(err.code, 500)
                return status, orjson.dumps({"code": err.code, "message": err.message})
            return HTTPStatus.OK, orjson.dumps({"error": {"code": err.code, "message": err.message}})
        return HTTPStatus.OK, orjson.dumps({"result": result})

    async def serve_legacy(self, request: Request) -> tuple[int, bytes]:
        """``POST /api``: one or more newline-delimited ``{"method", "params"}`` commands."""
        commands: list[tuple[Any, str, Params]] = []
        lines = [line for line in request.body.split(b"\n") if line.strip()]
        if not lines:
            return HTTPStatus.BAD_REQUEST, b"Bad Request"
        if len(lines) > self.cfg.api_batch_max_size:
            err = self._batch_too_large(len(lines))
            return HTTPStatus.BAD_REQUEST, orjson.dumps({"error": {"code": err.code, "message": err.message}})
        for line in lines:
            try:
                command = loads_writable(line)
            except ValueError:  # malformed, or nested too deeply to pass on
                return HTTPStatus.BAD_REQUEST, b"Bad Request"
            if not isinstance(command, dict):
                return HTTPStatus.BAD_REQUEST, b"Bad Request"
            method = command.get("method", 0)
            if isinstance(method, str):
                name = method.lower()
                if name not in METHOD_NUMBERS:
                    return HTTPStatus.BAD_REQUEST, b"Bad Request"
            elif isinstance(method, int) and not isinstance(method, bool) and method in _METHOD_BY_NUMBER:
                name = ""  # numeric methods are known but not served by number
            else:
                return HTTPStatus.BAD_REQUEST, b"Bad Request"
            params = command.get("params")
            commands.append((command.get("id"), name, params if params is not None else {}))
        replies = []
        for command_id, name, params in commands:
            reply: dict[str, Any] = {}
            if command_id is not None:
                reply["id"] = command_id
            try:
                handler = self._methods.get(name)
                if handler is None:
                    raise errors.METHOD_NOT_FOUND()
                if not isinstance(params, dict):
                    raise errors.BAD_REQUEST()
                reply["result"] = await handler(params)
            except ClientError as err:
                reply["error"] = {"code": err.code, "message": err.message}
            replies.append(orjson.dumps(reply))
        return HTTPStatus.OK, b"\n".join(replies)

    # -- methods ---------------------------------------------------------------------------------

    def _channel(self, params: Params, key: str = "channel") -> str:
        channel = _string(params, key, required=True)
        self.rules.validate_name(channel)  # 107 bad name, 102 unknown namespace
        return channel

    @staticmethod
    def _publication_params(params: Params) -> Params:
        out: Params = {}
        if params.get("b64data"):
            if not isinstance(params["b64data"], str):
                raise errors.BAD_REQUEST.with_message("b64data must be a string")
            out["b64data"] = params["b64data"]
        elif params.get("data") is not None:
            out["data"] = params["data"]
        else:
            raise errors.BAD_REQUEST.with_message("data required")
        tags = params.get("tags")
        if tags is not None:
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                raise errors.BAD_REQUEST.with_message("tags must map strings to strings")
            out["tags"] = tags
        for key in ("skip_history", "idempotency_key"):
            if params.get(key) is not None:
                out[key] = params[key]
        return out

    async def publish(self, params: Params) -> Params:
        channel = self._channel(params)
        publication = self._publication_params(params)
        publication["channel"] = channel
        return await self._ask_one(writer_for(channel, self.cluster.size), "publish", publication)

    async def broadcast(self, params: Params) -> Params:
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise errors.BAD_REQUEST.with_message("channels required")
        publication = self._publication_params(params)
        responses: list[Params | None] = [None] * len(channels)
        by_writer: dict[int, list[int]] = {}
        for position, channel in enumerate(channels):
            try:
                self.rules.validate_name(channel)
            except ClientError as err:
                responses[position] = {"error": {"code": err.code, "message": err.message}}
                continue
            by_writer.setdefault(writer_for(channel, self.cluster.size), []).append(position)

        async def one_writer(writer: int, positions: list[int]) -> None:
            # One request per writer shard, however many of the channels it writes.
            request = {**publication, "channels": [channels[p] for p in positions]}
            try:
                answers = (await self._ask_one(writer, "publish_many", request))["responses"]
            except ClientError as err:
                answers = [{"error": {"code": err.code, "message": err.message}}] * len(positions)
            for position, answer in zip(positions, answers, strict=True):
                responses[position] = answer

        await asyncio.gather(*(one_writer(w, p) for w, p in by_writer.items()))
        return {"responses": responses}

    async def subscribe(self, params: Params) -> Params:
        user = _string(params, "user", required=True)
        channel = self._channel(params)
        shard_params: Params = {"user": user, "channel": channel}
        for key in ("client", "session"):
            shard_params[key] = _string(params, key)
        for key in ("info", "b64info", "data", "b64data", "expire_at", "override", "recover_since"):
            if params.get(key) is not None:
                shard_params[key] = params[key]
        expire_at = params.get("expire_at")
        if expire_at is not None and (not isinstance(expire_at, int) or isinstance(expire_at, bool)):
            raise errors.BAD_REQUEST.with_message("expire_at must be unix seconds")
        return await self._ask_user(user, "subscribe", shard_params)

    async def unsubscribe(self, params: Params) -> Params:
        user = _string(params, "user", required=True)
        channel = self._channel(params)
        shard_params = {"user": user, "channel": channel}
        for key in ("client", "session"):
            shard_params[key] = _string(params, key)
        return await self._ask_user(user, "unsubscribe", shard_params)

    async def refresh(self, params: Params) -> Params:
        user = _string(params, "user", required=True)
        shard_params: Params = {"user": user}
        for key in ("client", "session"):
            shard_params[key] = _string(params, key)
        expired = params.get("expired", False)
        if not isinstance(expired, bool):
            raise errors.BAD_REQUEST.with_message("expired must be a boolean")
        expire_at = params.get("expire_at", 0) or 0
        if not isinstance(expire_at, int) or isinstance(expire_at, bool) or expire_at < 0:
            raise errors.BAD_REQUEST.with_message("expire_at must be unix seconds")
        shard_params.update({"expired": expired, "expire_at": expire_at})
        for key in ("info", "b64info"):
            if params.get(key) is not None:
                shard_params[key] = params[key]
        return await self._ask_user(user, "refresh", shard_params)

    def _shards_with_subscribers(self, channel: str) -> list[int] | None:
        """From the shared channel counts: the shards that have subscribers (None = unknown, ask all)."""
        if self._counts is None and self.cfg.shm_index:
            self._counts = open_counts(self.cfg)
        if self._counts is None:
            return None
        return self._counts.nonzero_columns(channel)

    async def presence(self, params: Params) -> Params:
        channel = self._channel(params)
        if not self.rules.options_for(channel).presence:
            raise errors.NOT_AVAILABLE()
        only = self._shards_with_subscribers(channel)
        if only == []:
            return {"presence": {}}
        gathered = await self.cluster.gather("presence", {"channel": channel}, only=only)
        self._raise_first_error(gathered.errors)
        return merge_presence(gathered.results.values())

    async def presence_stats(self, params: Params) -> Params:
        channel = self._channel(params)
        if not self.rules.options_for(channel).presence:
            raise errors.NOT_AVAILABLE()
        only = self._shards_with_subscribers(channel)
        if only == []:
            return {"num_clients": 0, "num_users": 0}
        gathered = await self.cluster.gather("presence_stats", {"channel": channel}, only=only)
        self._raise_first_error(gathered.errors)
        return merge_presence_stats(gathered.results.values())

    async def history(self, params: Params) -> Params:
        channel = self._channel(params)
        if not self.rules.options_for(channel).history_enabled:
            raise errors.NOT_AVAILABLE()
        limit = params.get("limit", 0) or 0
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise errors.BAD_REQUEST.with_message("limit must be an integer")
        shard_params: Params = {"channel": channel, "limit": limit, "reverse": bool(params.get("reverse"))}
        since = params.get("since")
        if since is not None:
            if not isinstance(since, dict):
                raise errors.BAD_REQUEST.with_message("since must be an object")
            shard_params["since"] = since
        found = await self._ask_one(writer_for(channel, self.cluster.size), "history", shard_params)
        return {
            "publications": [api_publication(p) for p in found["publications"]],
            "epoch": found["epoch"],
            "offset": found["offset"],
        }

    async def history_remove(self, params: Params) -> Params:
        channel = self._channel(params)
        if not self.rules.options_for(channel).history_enabled:
            raise errors.NOT_AVAILABLE()
        return await self._ask_one(
            writer_for(channel, self.cluster.size), "history_remove", {"channel": channel}
        )

    async def channels(self, params: Params) -> Params:
        pattern = _string(params, "pattern")
        gathered = await self.cluster.gather("channels", {"pattern": pattern})
        self._raise_first_error(gathered.errors)
        return merge_channels(gathered.results.values())

    async def batch(self, params: Params) -> Params:
        """``batch``: several commands in one request; answered as top-level ``replies`` (no ``result``)."""
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise errors.BAD_REQUEST.with_message("commands required")
        if len(commands) > self.cfg.api_batch_max_size:
            raise self._batch_too_large(len(commands))
        parsed: list[tuple[str, Any]] = []
        for command in commands:
            if not isinstance(command, dict) or len(command) != 1:
                raise errors.BAD_REQUEST.with_message("each command has exactly one method")
            ((method, method_params),) = command.items()
            parsed.append((method, method_params))

        async def one(method: str, method_params: Any) -> Params:
            handler = self._methods.get(method)
            try:
                if handler is None or method == "batch":
                    raise errors.METHOD_NOT_FOUND()
                if not isinstance(method_params, dict):
                    raise errors.BAD_REQUEST()
                return {method: await handler(method_params)}
            except ClientError as err:
                return {"error": {"code": err.code, "message": err.message}}

        if params.get("parallel"):
            replies = list(await asyncio.gather(*(one(m, p) for m, p in parsed)))
        else:
            replies = [await one(m, p) for m, p in parsed]
        return {"replies": replies}

    def _batch_too_large(self, count: int) -> ClientError:
        limit = self.cfg.api_batch_max_size
        log.info("API batch of %d commands refused (api_batch_max_size %d)", count, limit)
        return errors.BAD_REQUEST.with_message(f"too many commands in batch: {count}, limit {limit}")

    async def _ask_user(self, user: str, method: str, params: Params) -> Params:
        index = shard_for_user(user, self.cluster.size)
        assert index is not None
        await self._ask_one(index, method, params)
        return {}

    async def connections(self, params: Params) -> orjson.Fragment:
        user = _string(params, "user")
        expression = _string(params, "expression")
        if not user and not expression:
            raise errors.BAD_REQUEST.with_message("user or expression required")
        if expression:
            # Refused here (107, with the reason) before any shard sees it; shards check again.
            compile_connections_filter(expression, self.cfg)
        # The shards stop scanning when the router stops waiting for them.
        timeout = float(self.cfg.api_shard_timeout)
        shard_params = {"user": user, "expression": expression, "timeout": timeout}
        index = shard_for_user(user, self.cluster.size)
        if index is not None:
            # Every connection of a named user lives on that user's shard.
            try:
                answer = await self.cluster.ask_raw(index, "connections", shard_params, timeout)
            except (ShardUnavailable, RemoteError) as exc:
                raise client_error(exc, "connections", SHARD_UNAVAILABLE) from None
            return orjson.Fragment(answer.json)
        gathered = await self.cluster.gather("connections", shard_params, timeout, raw=True)
        self._raise_first_error(gathered.errors)
        merged = splice_connections([gathered.results[i].json for i in sorted(gathered.results)])
        return orjson.Fragment(with_unavailable_shards(merged, gathered.missing))

    async def disconnect(self, params: Params) -> Params:
        user = _string(params, "user", required=True)
        _string(params, "client")
        _string(params, "session")
        whitelist = params.get("whitelist") or []
        if not isinstance(whitelist, list) or not all(isinstance(c, str) for c in whitelist):
            raise errors.BAD_REQUEST.with_message("whitelist must be a list of client ids")
        spec = params.get("disconnect")
        if spec is not None:
            if not isinstance(spec, dict):
                raise errors.BAD_REQUEST.with_message("disconnect must be an object")
            code = spec.get("code", 0)
            reason = spec.get("reason", "")
            if not isinstance(code, int) or isinstance(code, bool) or not 3000 <= code <= 4999:
                raise errors.BAD_REQUEST.with_message("disconnect code must be within 3000..4999")
            if not isinstance(reason, str) or len(reason.encode()) > 123:
                raise errors.BAD_REQUEST.with_message(
                    "disconnect reason must be a string of at most 123 bytes"
                )
        index = shard_for_user(user, self.cluster.size)
        assert index is not None
        await self._ask_one(index, "disconnect", params)
        return {}

    async def info(self, params: Params) -> Params:
        gathered = await self.cluster.gather("info", {"channel_names": True})
        shards = []
        clients = users = subs = 0
        anonymous = False
        channels: set[str] = set()
        for index in sorted(gathered.results):
            stats = gathered.results[index]
            clients += stats["num_clients"]
            users += stats["num_users"]
            subs += stats["num_subs"]
            anonymous = anonymous or stats["num_anonymous"] > 0
            channels.update(stats.get("channels", ()))
            shards.append(
                {
                    "index": index,
                    "pid": stats["pid"],
                    "num_clients": stats["num_clients"],
                    "num_users": stats["num_users"],
                    "num_channels": stats["num_channels"],
                    "num_subs": stats["num_subs"],
                    "uptime": stats["uptime"],
                    "rss": stats["rss"],
                }
            )
        for index in gathered.missing:
            shards.append({"index": index, "unavailable": True})
        shards.sort(key=lambda item: item["index"])
        node = {
            "uid": self.uid,
            "name": self.cfg.node_name,
            "version": __version__,
            "num_clients": clients,
            "num_users": users + (1 if anonymous else 0),
            "num_channels": len(channels),
            "num_subs": subs,
            "uptime": int(time.monotonic() - self.started_at),
            "shards": shards,
        }
        return {"nodes": [node]}

    # -- helpers ---------------------------------------------------------------------------------

    async def _ask_one(self, index: int, method: str, params: Params) -> Params:
        try:
            result: Params = await self.cluster.ask(index, method, params)
        except (ShardUnavailable, RemoteError) as exc:
            raise client_error(exc, method, SHARD_UNAVAILABLE) from None
        return result

    @staticmethod
    def _raise_first_error(found: dict[int, RemoteError]) -> None:
        error = first_client_error(found)
        if error is not None:
            raise error
