"""Which channel a name denotes, which options apply, and who may do what in it.

Everything here is a pure function of the rules built at start-up and the arguments: no I/O and no
clock (the caller passes ``now``). The checks raise the errors a client is sent, so that a command
handler only has to catch :class:`ClientError` / :class:`Disconnect` and reply.

Order of checks (Centrifugo OSS, reference §10)
-----------------------------------------------
subscribe
    empty name → 107; too long → 107; channel limit → 106; already subscribed → 105; unknown namespace
    → 102; name shape (channel_regex on the part after the namespace, else printable ASCII) → 107;
    then the first grant wins: private ``$`` channel without a token → 103 before anything else; a token
    → verified (expired → 109, invalid or not issued for this user / channel / client → disconnect 3500,
    ``expire_at`` already passed → 110); the user in the channel's ``#`` list (allow_user_limited_channels);
    the subscribe proxy (only when the caller has one); allow_subscribe_for_client (anonymous users also
    need allow_subscribe_for_anonymous); client_insecure; otherwise 103.
publish
    publish proxy (only when the caller has one) → allow_publish_for_client, or
    allow_publish_for_subscriber for a subscriber, anonymous users also needing
    allow_publish_for_anonymous → client_insecure → 103.
presence, presence_stats, history
    feature off → 108 (even with client_insecure: there is nothing to read) → allow_*_for_client or
    allow_*_for_subscriber for a subscriber, anonymous users also needing allow_*_for_anonymous →
    client_insecure → 103.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.auth import SubscriptionTokenClaims, TokenExpired, TokenInvalid, TokenVerifier
from broker.channel_options import ChannelOptions
from broker.channels.names import allowed_users, byte_length, is_printable_ascii, split_namespace
from broker.config import Config, ConfigError
from broker.errors import (
    ALREADY_SUBSCRIBED,
    BAD_REQUEST,
    EXPIRED,
    INVALID_TOKEN,
    LIMIT_EXCEEDED,
    NOT_AVAILABLE,
    PERMISSION_DENIED,
    TOKEN_EXPIRED,
    UNKNOWN_CHANNEL,
)
from broker.protocol.state import (
    SOURCE_CLIENT_ALLOWED,
    SOURCE_CLIENT_INSECURE,
    SOURCE_SUBSCRIBE_PROXY,
    SOURCE_SUBSCRIPTION_TOKEN,
    SOURCE_USER_LIMITED,
)
from broker.proxy.table import ProxySpec, ProxyTable, proxy_table

_NAMESPACE_NAME = re.compile(r"[-a-zA-Z0-9_.]{2,}")


@dataclass(frozen=True, slots=True)
class SubscribeDecision:
    """A granted subscription.

    ``options`` are the channel's options after the token's ``override``. ``expire_at`` is unix seconds
    (0 = the subscription never expires): the token's ``expire_at`` claim when present, else its ``exp``.
    ``ask_proxy`` means the rules defer to the subscribe proxy: the caller must ask it, and its answer
    decides (``source`` is then SOURCE_SUBSCRIBE_PROXY).
    """

    source: int
    options: ChannelOptions
    claims: SubscriptionTokenClaims | None = None
    expire_at: int = 0
    ask_proxy: bool = False
    # Channel info and subscribe result data the subscribe proxy gave (a token carries its own).
    granted_info: bytes | None = None
    granted_data: bytes | None = None

    @property
    def token_uid(self) -> str:
        """The token's ``jti`` (reported as ``uid`` by the connections API)."""
        return self.claims.jti if self.claims is not None else ""

    @property
    def token_issued_at(self) -> int:
        return (self.claims.iat or 0) if self.claims is not None else 0

    @property
    def info(self) -> bytes | None:
        """Channel info for presence and join/leave (raw JSON bytes)."""
        return self.claims.info if self.claims is not None else self.granted_info

    @property
    def data(self) -> bytes | None:
        """Data returned to the client in the subscribe result."""
        return self.claims.data if self.claims is not None else self.granted_data


@dataclass(frozen=True, slots=True)
class PublishDecision:
    """A permitted publication; with ``ask_proxy`` the publish proxy decides instead of the permissions."""

    options: ChannelOptions
    ask_proxy: bool = False


class ChannelRules:
    """Channel options and permissions of one configuration; build once, share read-only."""

    __slots__ = (
        "_namespaces",
        "_top",
        "client_channel_limit",
        "client_insecure",
        "history_max_publication_limit",
        "max_length",
        "namespace_boundary",
        "personal_namespace",
        "private_prefix",
        "proxies",
        "user_boundary",
        "user_separator",
        "verifier",
    )

    def __init__(
        self,
        top: ChannelOptions,
        namespaces: Mapping[str, ChannelOptions],
        *,
        verifier: TokenVerifier | None = None,
        max_length: int = 255,
        private_prefix: str = "$",
        namespace_boundary: str = ":",
        user_boundary: str = "#",
        user_separator: str = ",",
        client_insecure: bool = False,
        client_channel_limit: int = 128,
        history_max_publication_limit: int = 300,
        personal_namespace: str = "",
        proxies: ProxyTable | None = None,
    ) -> None:
        self._top = top
        # Which channel events a proxy answers; without a table, the options' flat switches say.
        self.proxies = proxies
        self._namespaces = dict(namespaces)
        # Without a verifier every subscription token is refused (disconnect 3500), never trusted.
        self.verifier = verifier
        self.max_length = max_length
        self.private_prefix = private_prefix
        self.namespace_boundary = namespace_boundary
        self.user_boundary = user_boundary
        self.user_separator = user_separator
        self.client_insecure = client_insecure
        self.client_channel_limit = client_channel_limit
        self.history_max_publication_limit = history_max_publication_limit
        self.personal_namespace = personal_namespace

    @classmethod
    def from_config(cls, cfg: Config, *, verifier: TokenVerifier | None = None) -> ChannelRules:
        """Parses and checks every option set; raises ConfigError naming the namespace and key.

        Namespaces do not inherit top-level options: a namespace states all of its own.
        """
        meta_ttl = float(cfg.global_history_meta_ttl)
        top = ChannelOptions.from_mapping(
            cfg.channel_options, where="top-level channel options", default_history_meta_ttl=meta_ttl
        )
        namespaces: dict[str, ChannelOptions] = {}
        for index, raw in enumerate(cfg.namespaces):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"namespaces[{index}]: expected an object, got {raw!r}")
            name = raw.get("name")
            if not isinstance(name, str) or _NAMESPACE_NAME.fullmatch(name) is None:
                raise ConfigError(
                    f"namespaces[{index}]: invalid namespace name {name!r} "
                    "(at least 2 characters of letters, digits, '-', '_' or '.')"
                )
            if name in namespaces:
                raise ConfigError(f"namespace name must be unique: {name!r}")
            values = {key: value for key, value in raw.items() if key != "name"}
            namespaces[name] = ChannelOptions.from_mapping(
                values, where=f"namespace {name!r}", default_history_meta_ttl=meta_ttl
            )
        personal = cfg.user_personal_channel_namespace
        if cfg.user_subscribe_to_personal and personal and personal not in namespaces:
            raise ConfigError(f"user_personal_channel_namespace {personal!r} is not a defined namespace")
        if cfg.channel_max_length < 0:
            raise ConfigError("channel_max_length must not be negative")
        return cls(
            top,
            namespaces,
            verifier=verifier if verifier is not None else TokenVerifier.for_subscriptions(cfg),
            max_length=cfg.channel_max_length,
            private_prefix=cfg.channel_private_prefix,
            namespace_boundary=cfg.channel_namespace_boundary,
            user_boundary=cfg.channel_user_boundary,
            user_separator=cfg.channel_user_separator,
            client_insecure=cfg.client_insecure,
            client_channel_limit=cfg.client_channel_limit,
            history_max_publication_limit=cfg.client_history_max_publication_limit,
            personal_namespace=personal,
            proxies=proxy_table(cfg),
        )

    def proxy_for(self, kind: str, options: ChannelOptions) -> ProxySpec | None:
        """The proxy of a channel event (subscribe, publish, sub_refresh) for channels with ``options``."""
        if self.proxies is not None:
            return self.proxies.for_channel(kind, options)
        return None

    def _proxied(self, kind: str, options: ChannelOptions) -> bool:
        if self.proxies is not None:
            return self.proxies.for_channel(kind, options) is not None
        return bool(getattr(options, f"proxy_{kind}"))

    # ------------------------------------------------------------------ names and options

    @property
    def top_level(self) -> ChannelOptions:
        return self._top

    @property
    def namespaces(self) -> Mapping[str, ChannelOptions]:
        return self._namespaces

    def namespace_of(self, channel: str) -> str:
        return split_namespace(channel, self.private_prefix, self.namespace_boundary)[0]

    def options_for(self, channel: str) -> ChannelOptions:
        """The options of the channel's namespace; raises UNKNOWN_CHANNEL (102) for an undefined one."""
        namespace = split_namespace(channel, self.private_prefix, self.namespace_boundary)[0]
        if not namespace:
            return self._top
        options = self._namespaces.get(namespace)
        if options is None:
            raise UNKNOWN_CHANNEL()
        return options

    def validate_name(self, channel: str) -> ChannelOptions:
        """Checks a client-supplied channel name; returns its options.

        Raises BAD_REQUEST (107) for an empty, too long or badly shaped name and UNKNOWN_CHANNEL (102)
        for an undefined namespace.
        """
        self._check_length(channel)
        options = self.options_for(channel)
        self._check_shape(channel, options)
        return options

    def is_private(self, channel: str) -> bool:
        return bool(self.private_prefix) and channel.startswith(self.private_prefix)

    def is_user_limited(self, channel: str) -> bool:
        return bool(self.user_boundary) and self.user_boundary in channel

    def is_user_limited_allowed(self, channel: str, user: str, options: ChannelOptions) -> bool:
        """True when the namespace allows user-limited channels and ``user`` is listed after the last
        user boundary. An anonymous user never matches, even a list with an empty entry (``dm#1,``)."""
        if not user or not options.allow_user_limited_channels:
            return False
        users = allowed_users(channel, self.user_boundary, self.user_separator)
        return users is not None and user in users

    def personal_channel(self, user: str) -> str:
        """``#<user>``, or ``<ns>:#<user>`` with user_personal_channel_namespace."""
        channel = f"{self.user_boundary}{user}"
        if self.personal_namespace:
            return f"{self.personal_namespace}{self.namespace_boundary}{channel}"
        return channel

    def history_limit(self, requested: int) -> int:
        """The number of publications a client history call may read.

        0 asks for the stream position only; a negative request means "all", which like any request
        above client_history_max_publication_limit is capped to it (a limit of 0 disables the cap,
        and "all" stays -1).
        """
        cap = self.history_max_publication_limit
        if requested < 0:
            return cap if cap > 0 else -1
        if cap > 0 and requested > cap:
            return cap
        return requested

    # ------------------------------------------------------------------ permissions

    def check_subscribe(
        self,
        channel: str,
        user: str,
        client: str,
        token: str,
        now: float,
        *,
        channel_count: int = 0,
        already_subscribed: bool = False,
        proxy_available: bool = False,
    ) -> SubscribeDecision:
        """Whether connection (``user``, ``client``) may subscribe to ``channel`` with ``token`` ("" = none).

        ``channel_count`` is the number of channels the connection is subscribed to already;
        ``proxy_available`` says the caller can ask a subscribe proxy (where one is configured).
        Raises ClientError (103, 105, 106, 107, 109, 110, 102) or Disconnect (3500).
        """
        self._check_length(channel)
        if self.client_channel_limit > 0 and channel_count >= self.client_channel_limit:
            raise LIMIT_EXCEEDED()
        if already_subscribed:
            raise ALREADY_SUBSCRIBED()
        options = self.options_for(channel)
        self._check_shape(channel, options)

        if not token and self.is_private(channel):
            raise PERMISSION_DENIED()
        if token:
            return self._subscribe_with_token(channel, user, client, token, now, options)
        if self.is_user_limited_allowed(channel, user, options):
            return SubscribeDecision(SOURCE_USER_LIMITED, options)
        if proxy_available and self._proxied("subscribe", options):
            return SubscribeDecision(SOURCE_SUBSCRIBE_PROXY, options, ask_proxy=True)
        if options.allow_subscribe_for_client and (user or options.allow_subscribe_for_anonymous):
            return SubscribeDecision(SOURCE_CLIENT_ALLOWED, options)
        if self.client_insecure:
            return SubscribeDecision(SOURCE_CLIENT_INSECURE, options)
        raise PERMISSION_DENIED()

    def _subscribe_with_token(
        self, channel: str, user: str, client: str, token: str, now: float, options: ChannelOptions
    ) -> SubscribeDecision:
        if self.verifier is None:
            raise PERMISSION_DENIED()
        try:
            claims = self.verifier.verify_subscription_token(token, now)
        except TokenExpired:
            raise TOKEN_EXPIRED() from None
        except TokenInvalid:
            # A token that does not verify grants nothing: permission denied (the reference's 103).
            raise PERMISSION_DENIED() from None
        # A token is a grant for one user, one channel and optionally one connection; presenting it
        # anywhere else means the client is misbehaving, hence a terminal disconnect, not an error.
        if claims.user != user or claims.channel != channel:
            raise INVALID_TOKEN()
        if claims.client and claims.client != client:
            raise INVALID_TOKEN()
        expire_at = claims.expire_at if claims.expire_at is not None else (claims.exp or 0)
        if expire_at > 0 and expire_at <= int(now):
            raise EXPIRED()
        if claims.override:
            changes: dict[str, Any] = dict(claims.override)
            options = dataclasses.replace(options, **changes)
        return SubscribeDecision(SOURCE_SUBSCRIPTION_TOKEN, options, claims=claims, expire_at=expire_at)

    def check_publish(
        self, channel: str, user: str, *, subscribed: bool, proxy_available: bool = False
    ) -> PublishDecision:
        """Whether a client may publish into ``channel``; raises 102, 103 or 107."""
        options = self.validate_name(channel)
        if proxy_available and self._proxied("publish", options):
            return PublishDecision(options, ask_proxy=True)
        if self._granted(
            options.allow_publish_for_client,
            options.allow_publish_for_subscriber,
            options.allow_publish_for_anonymous,
            user,
            subscribed,
        ):
            return PublishDecision(options)
        raise PERMISSION_DENIED()

    def check_presence(self, channel: str, user: str, *, subscribed: bool) -> ChannelOptions:
        """Whether a client may read presence (and presence_stats); raises 102, 103, 107 or 108."""
        options = self.validate_name(channel)
        if not options.presence:
            raise NOT_AVAILABLE()
        if self._granted(
            options.allow_presence_for_client,
            options.allow_presence_for_subscriber,
            options.allow_presence_for_anonymous,
            user,
            subscribed,
        ):
            return options
        raise PERMISSION_DENIED()

    def check_presence_stats(self, channel: str, user: str, *, subscribed: bool) -> ChannelOptions:
        # Centrifugo guards presence_stats with the presence permissions.
        return self.check_presence(channel, user, subscribed=subscribed)

    def check_history(self, channel: str, user: str, *, subscribed: bool) -> ChannelOptions:
        """Whether a client may read history; raises 102, 103, 107 or 108."""
        options = self.validate_name(channel)
        if not options.history_enabled:
            raise NOT_AVAILABLE()
        if self._granted(
            options.allow_history_for_client,
            options.allow_history_for_subscriber,
            options.allow_history_for_anonymous,
            user,
            subscribed,
        ):
            return options
        raise PERMISSION_DENIED()

    def _granted(
        self, for_client: bool, for_subscriber: bool, for_anonymous: bool, user: str, subscribed: bool
    ) -> bool:
        if (for_client or (for_subscriber and subscribed)) and (user or for_anonymous):
            return True
        return self.client_insecure

    # ------------------------------------------------------------------ name checks

    def _check_length(self, channel: str) -> None:
        if not channel:
            raise BAD_REQUEST()
        if self.max_length > 0 and byte_length(channel) > self.max_length:
            raise BAD_REQUEST()

    def _check_shape(self, channel: str, options: ChannelOptions) -> None:
        if "\x00" in channel:
            # NUL terminates channel topics on the publication data plane, whatever a regex allows.
            raise BAD_REQUEST()
        if options.compiled_regex is not None:
            rest = split_namespace(channel, self.private_prefix, self.namespace_boundary)[1]
            # Unanchored search, as Go's MatchString: patterns anchor themselves with ^ and $.
            if options.compiled_regex.search(rest) is None:
                raise BAD_REQUEST()
        elif not is_printable_ascii(channel):
            raise BAD_REQUEST()
