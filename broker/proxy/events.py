"""The proxies called for a connected client, without I/O: request bodies and what answers mean.

Every request carries ``client``, ``transport``, ``protocol``, ``encoding`` and ``user`` and, with the
proxy's ``include_connection_meta``, the connection's ``meta``. Then, as Centrifugo sends them:

* refresh: nothing more; result ``{expired, expire_at, info | b64info, meta}``;
* subscribe: ``channel``, ``token`` (when given), ``data`` | ``b64data`` (the SubscribeRequest's data);
  result ``{info | b64info, data | b64data, override, expire_at}``;
* publish: ``channel``, ``data`` | ``b64data``; result ``{data | b64data, skip_history}``, new data
  replacing the client's;
* sub_refresh: ``channel``; result ``{expired, expire_at, info | b64info}``;
* rpc: see :mod:`broker.proxy.rpc`.

Any answer may instead be ``{"error": {code, message}}`` (an error reply to the command) or
``{"disconnect": {code, reason}}`` (the connection ends with it). A malformed answer raises
:class:`broker.proxy.connect.MalformedAnswer`; the caller treats it as a failed call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from broker.errors import ClientError, Disconnect
from broker.proxy.fields import MalformedAnswer, int_field, put_data, raw_field

if TYPE_CHECKING:
    from broker.proxy.table import ProxySpec

# Subscription options a subscribe proxy may override, as Centrifugo's SubscribeOptionOverride.
OVERRIDABLE = frozenset(
    {"presence", "join_leave", "force_push_join_leave", "force_positioning", "force_recovery"}
)


@dataclass(slots=True)
class Refusal:
    """An ``error`` or ``disconnect`` answer (exactly one is set)."""

    error: ClientError | None = None
    disconnect: Disconnect | None = None


@dataclass(slots=True)
class SubscribeGrant:
    info: bytes | None = None  # channel info (raw JSON, or bytes with binary encoding)
    data: bytes | None = None  # for the subscribe result
    override: dict[str, bool] | None = None
    expire_at: int = 0


@dataclass(slots=True)
class PublishGrant:
    data: bytes | None = None  # replaces the client's data
    skip_history: bool = False


@dataclass(slots=True)
class RefreshGrant:
    expired: bool = False
    expire_at: int = 0
    info: bytes | None = None
    meta: dict[str, Any] | None = None


class Caller(Protocol):
    """Who a proxy request is about (a connection's state): what every request carries."""

    client: str
    transport: str
    protocol: str
    user: str
    meta: dict[str, Any] | None


def base_request(caller: Caller, *, binary: bool, include_meta: bool) -> dict[str, Any]:
    request: dict[str, Any] = {
        "client": caller.client,
        "transport": caller.transport,
        "protocol": caller.protocol,
        "encoding": "binary" if binary else "json",
        "user": caller.user,
    }
    if include_meta and caller.meta is not None:
        request["meta"] = caller.meta
    return request


def subscribe_request(
    caller: Caller, spec: ProxySpec, channel: str, token: str, data: bytes | None
) -> dict[str, Any]:
    request = base_request(caller, binary=spec.binary_encoding, include_meta=spec.include_connection_meta)
    request["channel"] = channel
    if token:
        request["token"] = token
    put_data(request, data, spec.binary_encoding)
    return request


def publish_request(caller: Caller, spec: ProxySpec, channel: str, data: bytes) -> dict[str, Any]:
    request = base_request(caller, binary=spec.binary_encoding, include_meta=spec.include_connection_meta)
    request["channel"] = channel
    put_data(request, data, spec.binary_encoding)
    return request


def refresh_request(caller: Caller, spec: ProxySpec, channel: str = "") -> dict[str, Any]:
    """A refresh request, or with ``channel`` a sub_refresh one."""
    request = base_request(caller, binary=spec.binary_encoding, include_meta=spec.include_connection_meta)
    if channel:
        request["channel"] = channel
    return request


def refusal_of(answer: Any) -> Refusal | None:
    """The error or disconnect an answer asks for, if any; raises MalformedAnswer for a non-object."""
    if not isinstance(answer, dict):
        raise MalformedAnswer("not an object")
    if isinstance(answer.get("disconnect"), dict):
        spec = answer["disconnect"]
        return Refusal(disconnect=Disconnect(int_field(spec, "code"), str(spec.get("reason", ""))))
    if isinstance(answer.get("error"), dict):
        spec = answer["error"]
        return Refusal(error=ClientError(int_field(spec, "code"), str(spec.get("message", ""))))
    return None


def _result(answer: dict[str, Any]) -> dict[str, Any]:
    result = answer.get("result")
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise MalformedAnswer("result is not an object")
    return result


def parse_subscribe(answer: Any) -> Refusal | SubscribeGrant:
    refusal = refusal_of(answer)
    if refusal is not None:
        return refusal
    result = _result(answer)
    override: dict[str, bool] | None = None
    raw_override = result.get("override")
    if raw_override is not None:
        if not isinstance(raw_override, dict):
            raise MalformedAnswer("override must be an object")
        override = {}
        for key, spec in raw_override.items():
            if key not in OVERRIDABLE:
                continue  # options a proxy cannot change (Centrifugo ignores them too)
            value = spec.get("value") if isinstance(spec, dict) else None
            if not isinstance(value, bool):
                raise MalformedAnswer(f'override.{key} must be {{"value": bool}}')
            override[key] = value
    return SubscribeGrant(
        info=raw_field(result, "info"),
        data=raw_field(result, "data"),
        override=override or None,
        expire_at=int_field(result, "expire_at"),
    )


def parse_publish(answer: Any) -> Refusal | PublishGrant:
    refusal = refusal_of(answer)
    if refusal is not None:
        return refusal
    result = _result(answer)
    skip = result.get("skip_history", False)
    if not isinstance(skip, bool):
        raise MalformedAnswer("skip_history must be a boolean")
    return PublishGrant(data=raw_field(result, "data"), skip_history=skip)


def parse_refresh(answer: Any) -> Refusal | RefreshGrant:
    """A refresh or sub_refresh answer (sub_refresh ignores ``meta``)."""
    refusal = refusal_of(answer)
    if refusal is not None:
        return refusal
    result = _result(answer)
    expired = result.get("expired", False)
    meta = result.get("meta")
    if not isinstance(expired, bool):
        raise MalformedAnswer("expired must be a boolean")
    if meta is not None and not isinstance(meta, dict):
        raise MalformedAnswer("meta must be an object")
    return RefreshGrant(
        expired=expired, expire_at=int_field(result, "expire_at"), info=raw_field(result, "info"), meta=meta
    )
