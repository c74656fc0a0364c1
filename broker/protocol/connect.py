"""Connect handling shared by every transport: credentials from a token, the connect result.

``authenticate`` turns a ConnectRequest's token into ``Credentials`` following Centrifugo's rules:
an invalid token is disconnect 3500, an expired one is error 109, no token is 3501 unless anonymous
connections are allowed, and ``client_insecure`` accepts anything (reading the token's claims without
checking them). ``apply_credentials`` copies them onto the connection state.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from broker import __version__, errors
from broker.config import Config
from broker.emulation import TRANSPORTS as EMULATION
from broker.errors import ClientError, Disconnect
from broker.protocol.state import (
    SOURCE_CONNECT_PROXY,
    SOURCE_CONNECTION_TOKEN,
    SOURCE_UNI_CONNECT_SUBS,
    SOURCE_USER_PERSONAL,
    ConnectionState,
)
from broker.proxy.connect import KIND_DISCONNECT, KIND_ERROR, KIND_FAILED, KIND_NONE, Outcome


@dataclass(slots=True)
class Credentials:
    user: str = ""
    expire_at: float = 0.0  # 0 = the connection does not expire
    info: bytes | None = None
    meta: dict[str, Any] | None = None
    token_uid: str = ""
    token_issued_at: int = 0
    channels: list[str] = field(default_factory=list)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: int = SOURCE_CONNECTION_TOKEN  # of the server-side subscriptions it brings
    data: bytes | None = None  # raw JSON for ConnectResult.data (the connect proxy's result)
    labels: dict[str, str] | None = None


class ConnectClaims(Protocol):
    user: str
    exp: int | None
    iat: int | None
    jti: str | None
    info: bytes | None
    meta: dict[str, Any] | None
    expire_at: int | None
    channels: list[str]
    subs: dict[str, dict[str, Any]]
    labels: dict[str, str] | None


class ConnectVerifier(Protocol):
    def verify_connect_token(self, token: str, now: float) -> Any: ...


def authenticate(
    token: str, verifier: ConnectVerifier, cfg: Config, now: float, proxied: Outcome | None = None
) -> Credentials:
    from broker.auth import TokenExpired, TokenInvalid

    if not token and proxied is not None:
        return proxy_credentials(proxied, cfg, now)
    if not token:
        if cfg.client_insecure or cfg.allow_anonymous_connect_without_token:
            return Credentials()
        raise errors.DISCONNECT_BAD_REQUEST()
    claims: ConnectClaims
    if cfg.client_insecure:
        claims = _unchecked_claims(token)
    else:
        try:
            claims = verifier.verify_connect_token(token, now)
        except TokenExpired:
            raise errors.TOKEN_EXPIRED() from None
        except TokenInvalid:
            raise errors.INVALID_TOKEN() from None
    if not claims.user and cfg.disallow_anonymous_connection_tokens and not cfg.client_insecure:
        raise errors.DISCONNECT_PERMISSION_DENIED()
    # expire_at overrides exp for the connection's lifetime; expire_at 0 means it never expires.
    expire_at = float(claims.expire_at) if claims.expire_at is not None else float(claims.exp or 0)
    if expire_at and expire_at <= now and not cfg.client_insecure:
        raise errors.EXPIRED()
    return Credentials(
        user=claims.user,
        expire_at=0.0 if cfg.client_insecure else expire_at,
        info=claims.info,
        meta=claims.meta,
        token_uid=claims.jti or "",
        token_issued_at=int(claims.iat or 0),
        channels=list(claims.channels),
        subs=dict(claims.subs),
        labels=claims.labels,
    )


def proxy_credentials(outcome: Outcome, cfg: Config, now: float) -> Credentials:
    """What the connect proxy decided, as credentials (or the error or disconnect it asked for)."""
    if outcome.kind == KIND_FAILED:
        raise errors.INTERNAL()  # temporary: the client tries again
    if outcome.kind == KIND_ERROR:
        raise ClientError(outcome.code, outcome.message)
    if outcome.kind == KIND_DISCONNECT:
        raise Disconnect(outcome.code, outcome.message)
    if outcome.kind == KIND_NONE:
        if cfg.client_insecure or cfg.allow_anonymous_connect_without_token:
            return Credentials()
        raise errors.DISCONNECT_BAD_REQUEST()
    if outcome.expire_at and outcome.expire_at <= now:
        raise errors.EXPIRED()
    return Credentials(
        user=outcome.user,
        expire_at=float(outcome.expire_at),
        info=outcome.info,
        meta=outcome.meta,
        channels=list(outcome.channels),
        subs=dict(outcome.subs),
        labels=outcome.labels,
        source=SOURCE_CONNECT_PROXY,
        data=outcome.data,
    )


@dataclass(slots=True)
class _UncheckedClaims:
    user: str = ""
    exp: int | None = None
    iat: int | None = None
    jti: str | None = None
    info: bytes | None = None
    meta: dict[str, Any] | None = None
    expire_at: int | None = None
    channels: list[str] = field(default_factory=list)
    subs: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] | None = None


def _unchecked_claims(token: str) -> _UncheckedClaims:
    """Claims read without any check, for ``client_insecure`` (a development mode)."""
    parts = token.split(".")
    if len(parts) != 3:
        return _UncheckedClaims()
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return _UncheckedClaims()
    if not isinstance(payload, dict):
        return _UncheckedClaims()
    sub = payload.get("sub")
    meta = payload.get("meta")
    info = payload.get("info")
    channels = payload.get("channels")
    return _UncheckedClaims(
        user=sub if isinstance(sub, str) else "",
        meta=meta if isinstance(meta, dict) else None,
        info=orjson.dumps(info) if info is not None else None,
        jti=payload.get("jti") if isinstance(payload.get("jti"), str) else None,
        iat=payload.get("iat") if isinstance(payload.get("iat"), int) else None,
        channels=[c for c in channels if isinstance(c, str)] if isinstance(channels, list) else [],
    )


class ChannelValidator(Protocol):
    def validate_name(self, channel: str) -> Any: ...


def _raw_json_or_b64(spec: dict[str, Any], key: str) -> bytes | None:
    """A ``key`` (any JSON) or ``b64<key>`` (base64) field of a token's subs entry, as bytes."""
    b64 = spec.get("b64" + key)
    if isinstance(b64, str) and b64:
        try:
            return base64.b64decode(b64, validate=True)
        except ValueError:
            raise errors.INVALID_TOKEN() from None
    if key in spec and spec[key] is not None:
        return orjson.dumps(spec[key])
    return None


def refresh_proxy_configured(cfg: Config) -> bool:
    return bool(cfg.refresh_proxy_name if cfg.granular_proxy_mode else cfg.proxy_refresh_endpoint)


def apply_credentials(
    state: ConnectionState, creds: Credentials, channels: ChannelValidator, *, refresh_proxy: bool = False
) -> None:
    """Copy verified credentials onto the connection; token channels become server-side subscriptions.

    With ``refresh_proxy`` (one is configured), a connection the connect proxy let in with an expiry is
    prolonged by the refresh proxy, as Centrifugo does, rather than by the client."""
    state.user = creds.user
    state.expire_at = creds.expire_at
    state.refresh_by_proxy = refresh_proxy and creds.source == SOURCE_CONNECT_PROXY and bool(creds.expire_at)
    state.info = creds.info
    state.meta = creds.meta
    state.labels = creds.labels
    state.token_uid = creds.token_uid
    state.token_issued_at = creds.token_issued_at
    for channel in creds.channels:
        channels.validate_name(channel)
        state.channels[channel] = creds.source
    for channel, spec in creds.subs.items():
        channels.validate_name(channel)
        state.channels[channel] = creds.source
        chan_info = _raw_json_or_b64(spec, "info") if isinstance(spec, dict) else None
        if chan_info is not None:
            if state.chan_info is None:
                state.chan_info = {}
            state.chan_info[channel] = chan_info


def personal_subscription(state: ConnectionState, rules: Any, cfg: Config) -> None:
    """``user_subscribe_to_personal``: every authenticated user joins its personal channel."""
    if cfg.user_subscribe_to_personal and state.user:
        state.channels.setdefault(rules.personal_channel(state.user), SOURCE_USER_PERSONAL)


def check_channel_limit(state: ConnectionState, cfg: Config) -> None:
    """Server-side subscriptions (token ``channels`` / ``subs``, personal channel) over
    ``client_channel_limit`` refuse the connection with 3505, as in Centrifugo."""
    limit = cfg.client_channel_limit
    if limit > 0 and len(state.channels) > limit:
        raise errors.CHANNEL_LIMIT()


def uni_request_subscriptions(
    state: ConnectionState, requested: Any, rules: Any, now: float
) -> dict[str, tuple[int, str]]:
    """ConnectRequest ``subs`` of a unidirectional client: subscribed where the normal rules allow it.

    A channel the rules refuse is silently left out; one in an undefined namespace is a bad request.
    Returns the channels that asked to recover (``recover: true``) and keep history, with the position
    ``(offset, epoch)`` to recover from.
    """
    to_recover: dict[str, tuple[int, str]] = {}
    if not requested:
        return to_recover
    if not isinstance(requested, dict):
        raise errors.DISCONNECT_BAD_REQUEST()
    for channel, options in requested.items():
        if options is not None and not isinstance(options, dict):
            raise errors.DISCONNECT_BAD_REQUEST()  # a SubscribeRequest is an object, as in Centrifugo
        if not isinstance(channel, str) or channel in state.channels:
            continue
        try:
            decision = rules.check_subscribe(
                channel, state.user, state.client, "", now, channel_count=len(state.channels)
            )
        except errors.ClientError as err:
            if err.code == errors.UNKNOWN_CHANNEL.code:
                raise errors.DISCONNECT_BAD_REQUEST() from None
            continue
        except errors.Disconnect:
            continue
        state.channels[channel] = SOURCE_UNI_CONNECT_SUBS
        if isinstance(options, dict) and options.get("recover") and decision.options.history_enabled:
            offset = options.get("offset") or 0
            epoch = options.get("epoch") or ""
            if isinstance(offset, str) and offset.isdigit():
                offset = int(offset)
            if isinstance(offset, int) and offset >= 0 and isinstance(epoch, str):
                to_recover[channel] = (offset, epoch)
    return to_recover


def subscription_data(creds: Credentials) -> dict[str, bytes]:
    """Per-channel ``data`` of the token's subs, returned to the client in the connect result."""
    out: dict[str, bytes] = {}
    for channel, spec in creds.subs.items():
        if isinstance(spec, dict):
            data = _raw_json_or_b64(spec, "data")
            if data is not None:
                out[channel] = data
    return out


# ``ttl`` is a uint32 in client.proto; a later expiry (a token valid for centuries) is reported as the most
# it can say.
MAX_TTL = 2**32 - 1


def ttl_seconds(expire_at: float, now: float) -> int:
    """Seconds until ``expire_at``, as the protocol's ``ttl`` field can carry them."""
    return min(MAX_TTL, max(0, int(expire_at - now)))


def connect_result(
    state: ConnectionState,
    cfg: Config,
    now: float,
    *,
    uni: bool,
    sub_data: dict[str, bytes] | None = None,
    data: bytes | None = None,
) -> dict[str, Any]:
    """ConnectResult (bidirectional) or the connect push body (unidirectional)."""
    result: dict[str, Any] = {"client": state.client, "version": __version__}
    if state.channels:
        subs: dict[str, Any] = {}
        for channel in state.channels:
            channel_data = sub_data.get(channel) if sub_data else None
            subs[channel] = {"data": channel_data} if channel_data is not None else {}
        result["subs"] = subs
    if state.expire_at and not state.refresh_by_proxy:
        result["expires"] = True
        result["ttl"] = ttl_seconds(state.expire_at, now)
    if data is not None:
        result["data"] = data
    result["ping"] = int(cfg.ping_interval)
    if uni:
        result["session"] = state.session
    else:
        result["pong"] = True
        if state.transport in EMULATION:
            # The client's later commands come by /emulation, naming the session and its node.
            result["session"] = state.session
            result["node"] = cfg.node_id
    if cfg.client_connect_include_server_time:
        result["time"] = int(now * 1000)
    return result
