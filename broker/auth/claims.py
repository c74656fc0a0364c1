"""Typed claims of connection and subscription tokens, read from an already verified payload.

Types follow what Centrifugo's Go structs accept: a claim of the wrong JSON type makes the whole token
invalid rather than being silently ignored. ``b64info`` / ``b64data`` win over ``info`` / ``data`` when
both are present, as in Centrifugo.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from broker.errors import INVALID_TOKEN, TOKEN_EXPIRED, ClientError, Disconnect


class TokenError(Exception):
    """A token that cannot be used; the subclasses say how the client is told."""


class TokenInvalid(TokenError):
    """Bad signature, malformed token or unacceptable claims: disconnect 3500 at connect."""

    disconnect: ClassVar[Disconnect] = INVALID_TOKEN

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenExpired(TokenError):
    """A correctly signed token whose ``exp`` has passed: client error 109, the SDK fetches a new one."""

    client_error: ClassVar[ClientError] = TOKEN_EXPIRED

    def __init__(self) -> None:
        super().__init__("token expired")


# Subscription options a subscription token may override (each given as {"value": bool}).
OVERRIDE_OPTIONS = frozenset(
    {"presence", "join_leave", "force_push_join_leave", "force_positioning", "force_recovery"}
)


@dataclass(slots=True)
class ConnectTokenClaims:
    user: str
    exp: int | None = None
    iat: int | None = None
    jti: str = ""
    info: bytes | None = None
    meta: dict[str, Any] | None = None
    expire_at: int | None = None  # overrides exp for the connection's lifetime; 0 = never expires
    channels: list[str] = field(default_factory=list)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] | None = None  # immutable for the connection's life (v6)


@dataclass(slots=True)
class SubscriptionTokenClaims:
    user: str
    channel: str
    client: str = ""
    exp: int | None = None
    iat: int | None = None
    jti: str = ""
    expire_at: int | None = None  # overrides exp for the subscription's lifetime; 0 = never expires
    info: bytes | None = None
    data: bytes | None = None
    override: dict[str, bool] | None = None


def connect_claims(payload: dict[str, Any], user_id_claim: str = "") -> ConnectTokenClaims:
    channel = payload.get("channel")
    if channel is not None and channel != "":
        raise TokenInvalid("connection token must not contain a channel claim")
    meta = payload.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise TokenInvalid("meta claim must be a JSON object")
    return ConnectTokenClaims(
        user=user_from_payload(payload, user_id_claim),
        exp=numeric_date(payload, "exp"),
        iat=numeric_date(payload, "iat"),
        jti=_optional_str(payload, "jti"),
        info=_raw_or_base64(payload, "info", "b64info"),
        meta=meta,
        expire_at=_optional_int(payload, "expire_at"),
        channels=_channels(payload),
        subs=_subs(payload),
        labels=labels_of(payload.get("labels")),
    )


def labels_of(value: Any) -> dict[str, str] | None:
    """A ``labels`` claim (or connect proxy field): an object of strings; anything else is refused."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TokenInvalid("labels claim must be an object of strings")
    return dict(value) or None


def subscription_claims(payload: dict[str, Any], user_id_claim: str = "") -> SubscriptionTokenClaims:
    channel = _optional_str(payload, "channel")
    if not channel:
        raise TokenInvalid("subscription token must contain a channel claim")
    return SubscriptionTokenClaims(
        user=user_from_payload(payload, user_id_claim),
        channel=channel,
        client=_optional_str(payload, "client"),
        exp=numeric_date(payload, "exp"),
        iat=numeric_date(payload, "iat"),
        jti=_optional_str(payload, "jti"),
        expire_at=_optional_int(payload, "expire_at"),
        info=_raw_or_base64(payload, "info", "b64info"),
        data=_raw_or_base64(payload, "data", "b64data"),
        override=_override(payload.get("override")),
    )


def user_from_payload(payload: dict[str, Any], user_id_claim: str = "") -> str:
    """The user id: ``sub``, or the claim at a dotted path (``user.id``) when one is configured."""
    if not user_id_claim:
        sub = payload.get("sub", "")
        if not isinstance(sub, str):
            raise TokenInvalid("sub claim must be a string")
        return sub
    value: Any = payload
    for part in user_id_claim.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, str):
        return value
    # Numeric ids are common in custom claims; they read as their decimal text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        return ""
    raise TokenInvalid(f"{user_id_claim} claim must be a string")


# Times are int64 seconds in Centrifugo's claims; a number outside that range cannot be a time (and
# would overflow the fields it ends up in), so the token is invalid rather than valid forever.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def numeric_date(payload: dict[str, Any], name: str) -> int | None:
    """A JWT NumericDate: seconds as a JSON number (fractions are dropped), within int64."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenInvalid(f"{name} claim must be a number")
    if not INT64_MIN <= value <= INT64_MAX:  # also false for NaN
        raise TokenInvalid(f"{name} claim out of range")
    return int(value)


def _optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenInvalid(f"{name} claim must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise TokenInvalid(f"{name} claim out of range")
    return value


def _optional_str(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TokenInvalid(f"{name} claim must be a string")
    return value


def _raw_or_base64(payload: dict[str, Any], raw_name: str, base64_name: str) -> bytes | None:
    encoded = payload.get(base64_name)
    if encoded is not None and encoded != "":
        if not isinstance(encoded, str):
            raise TokenInvalid(f"{base64_name} claim must be a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TokenInvalid(f"{base64_name} claim is not valid base64") from exc
    value = payload.get(raw_name)
    if value is None:
        return None
    return orjson.dumps(value)


def _channels(payload: dict[str, Any]) -> list[str]:
    value = payload.get("channels")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(ch, str) for ch in value):
        raise TokenInvalid("channels claim must be a list of strings")
    return value


def _subs(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    value = payload.get("subs")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TokenInvalid("subs claim must be a JSON object")
    for options in value.values():
        if not isinstance(options, dict):
            raise TokenInvalid("subs claim values must be JSON objects")
        if "override" in options:
            _override(options["override"])
    return value


def _override(value: Any) -> dict[str, bool] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TokenInvalid("override claim must be a JSON object")
    out: dict[str, bool] = {}
    for name, wrapped in value.items():
        if name not in OVERRIDE_OPTIONS or wrapped is None:
            continue
        if not isinstance(wrapped, dict) or not isinstance(wrapped.get("value"), bool):
            raise TokenInvalid(f'override.{name} must be {{"value": true|false}}')
        out[name] = wrapped["value"]
    return out
