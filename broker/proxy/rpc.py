"""The RPC proxy without I/O: a client's ``rpc`` command as a backend call, and what the answer means.

Request (as Centrifugo sends it): ``client``, ``transport``, ``protocol``, ``encoding``, ``user``,
``method``, ``data`` (``b64data`` with ``proxy_binary_encoding``) and, with
``proxy_include_connection_meta``, the connection's ``meta``. Answer: ``{"result": {"data" | "b64data"}}``
(the reply's data), ``{"error": {code, message}}`` (an error reply) or ``{"disconnect": {code, reason}}``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from broker.errors import ClientError, Disconnect
from broker.proxy.connect import MalformedAnswer, int_field, raw_field


@dataclass(slots=True)
class RpcOutcome:
    data: bytes | None = None  # raw JSON (JSON clients) or bytes (Protobuf clients)
    error: ClientError | None = None
    disconnect: Disconnect | None = None


def rpc_request(
    *,
    client: str,
    transport: str,
    protocol: str,
    user: str,
    method: str,
    data: bytes,
    meta: dict[str, Any] | None,
    binary_encoding: bool,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "client": client,
        "transport": transport,
        "protocol": protocol,
        "encoding": "binary" if binary_encoding else "json",
        "user": user,
        "method": method,
    }
    if data:
        if binary_encoding:
            request["b64data"] = base64.b64encode(data).decode()
        else:
            request["data"] = orjson.Fragment(data)
    if meta is not None:
        request["meta"] = meta
    return request


def parse_rpc_answer(answer: Any) -> RpcOutcome:
    """What the backend's answer to an RPC decides; raises :class:`MalformedAnswer`."""
    if not isinstance(answer, dict):
        raise MalformedAnswer("not an object")
    if isinstance(answer.get("disconnect"), dict):
        spec = answer["disconnect"]
        return RpcOutcome(disconnect=Disconnect(int_field(spec, "code"), str(spec.get("reason", ""))))
    if isinstance(answer.get("error"), dict):
        spec = answer["error"]
        return RpcOutcome(error=ClientError(int_field(spec, "code"), str(spec.get("message", ""))))
    result = answer.get("result")
    if result is None:
        return RpcOutcome()
    if not isinstance(result, dict):
        raise MalformedAnswer("result is not an object")
    return RpcOutcome(data=raw_field(result, "data"))
