"""The server API over HTTP: who may call it, how requests are framed, how answers and errors are written.

Two styles share one set of methods (reference §6): ``POST /api/<method>`` with the params as the body,
and the legacy ``POST /api`` with ``{"method": ..., "params": ...}`` commands, several of them
newline-delimited. Which methods exist, and what they do, is :mod:`router.api.methods`' table.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import orjson

from broker import errors
from broker.config import Config
from broker.errors import ClientError
from broker.jsonlimits import loads_writable
from router.http import Request

log = logging.getLogger("switchboard.api")

Params = dict[str, Any]
# Runs one method: 102-range errors for an unknown method, 107 for params that are not an object.
Call = Callable[[str, Any], Awaitable[Any]]

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


def authorized(cfg: Config, request: Request) -> bool:
    """The API key from ``X-API-Key``, ``Authorization: apikey <key>`` or ``?api_key=``."""
    if cfg.api_insecure:
        return True
    key = cfg.api_key
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


def batch_too_large(cfg: Config, count: int) -> ClientError:
    limit = cfg.api_batch_max_size
    log.info("API batch of %d commands refused (api_batch_max_size %d)", count, limit)
    return errors.BAD_REQUEST.with_message(f"too many commands in batch: {count}, limit {limit}")


def _error(err: ClientError) -> Params:
    return {"code": err.code, "message": err.message}


async def serve_method(
    cfg: Config, methods: Mapping[str, object], call: Call, method: str, request: Request
) -> tuple[int, bytes]:
    """``POST /api/<method>``: the body is the params object."""
    if method not in methods:
        return HTTPStatus.NOT_FOUND, b"404 page not found"
    body = request.body.strip()
    try:
        params = loads_writable(body) if body else {}
    except ValueError:  # malformed, or nested too deeply to pass on
        return HTTPStatus.BAD_REQUEST, b"Bad Request"
    transport_mode = (
        cfg.api_error_mode == "transport" or request.header("x-centrifugo-error-mode") == "transport"
    )
    try:
        result = await call(method, params)
        if method == "batch":
            return HTTPStatus.OK, orjson.dumps(result)
    except ClientError as err:
        if transport_mode:
            return _TRANSPORT_STATUS.get(err.code, 500), orjson.dumps(_error(err))
        return HTTPStatus.OK, orjson.dumps({"error": _error(err)})
    return HTTPStatus.OK, orjson.dumps({"result": result})


async def serve_legacy(cfg: Config, call: Call, request: Request) -> tuple[int, bytes]:
    """``POST /api``: one or more newline-delimited ``{"method", "params"}`` commands."""
    commands: list[tuple[Any, str, Any]] = []
    lines = [line for line in request.body.split(b"\n") if line.strip()]
    if not lines:
        return HTTPStatus.BAD_REQUEST, b"Bad Request"
    if len(lines) > cfg.api_batch_max_size:
        return HTTPStatus.BAD_REQUEST, orjson.dumps({"error": _error(batch_too_large(cfg, len(lines)))})
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
        reply: Params = {}
        if command_id is not None:
            reply["id"] = command_id
        try:
            reply["result"] = await call(name, params)
        except ClientError as err:
            reply["error"] = _error(err)
        replies.append(orjson.dumps(reply))
    return HTTPStatus.OK, b"\n".join(replies)
