"""Per-channel options: the top-level ("without namespace") set and one set per namespace.

Options are read once at start-up from plain mappings (the config file, the environment) and checked
there, so that a mistake in a namespace stops the server with a message naming the key instead of
surfacing later as a puzzling permission error. Defaults are Centrifugo v5's: everything off, which
makes a namespace closed to clients until its permissions are switched on.

Three generations of names are accepted:

* v4/v5 flat names (``allow_subscribe_for_client``, ``proxy_subscribe``, ...) - the canonical fields;
* v6 renames of the proxy switches (``subscribe_proxy_enabled``, ...);
* v3 names (``recover``, ``position``, ``publish``, ``subscribe_to_publish``, ``anonymous``,
  ``protected``, ``presence_disable_for_client``, ``history_disable_for_client``). A mapping that uses any
  of them is read the way v3 behaved - clients could subscribe unless ``protected``, presence and history
  were open to subscribers unless disabled for clients - which is also what Centrifugo's own v3 → v4
  converter writes out. An explicit v4 key always wins over what a v3 key implies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

import re2

from broker.config_values import ConfigError, coerce, opt

RECOVERY_MODES = ("", "stream", "cache")
DELTA_TYPES = ("fossil",)

# v3 names that map one to one onto a v4 option.
V3_RENAMES = {
    "recover": "force_recovery",
    "position": "force_positioning",
    "publish": "allow_publish_for_client",
    "subscribe_to_publish": "allow_publish_for_subscriber",
    "anonymous": "allow_subscribe_for_anonymous",
}
# v3 names that only switch something off; v3 docs spell them "disable", the converter "disabled".
V3_NEGATIONS = frozenset(
    {
        "protected",
        "presence_disable_for_client",
        "presence_disabled_for_client",
        "history_disable_for_client",
        "history_disabled_for_client",
    }
)
V3_KEYS = frozenset(V3_RENAMES) | V3_NEGATIONS


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    # Each option's v6 metadata is its name inside a v6 namespace object (the same as v5's except for
    # the proxy switches); the README's option table is generated from these declarations.
    presence: bool = opt(False, "presence", "keep who is subscribed (presence, presence_stats)")
    join_leave: bool = opt(False, "join_leave", "send join/leave events to subscribers who ask")
    force_push_join_leave: bool = opt(False, "force_push_join_leave", "send join/leave to every subscriber")
    history_size: int = opt(0, "history_size", "publications kept per channel (0: no history)", minimum=0)
    history_ttl: float = opt(0.0, "history_ttl", "how long publications stay in history", minimum=0)
    history_meta_ttl: float = opt(
        0.0, "history_meta_ttl", "how long a stream position is kept (0: channel.history_meta_ttl)", minimum=0
    )
    force_positioning: bool = opt(False, "force_positioning", "check every subscriber's position")
    allow_positioning: bool = opt(False, "allow_positioning", "let a subscriber ask for positioning")
    force_recovery: bool = opt(False, "force_recovery", "recover every subscriber after a reconnect")
    allow_recovery: bool = opt(False, "allow_recovery", "let a subscriber ask for recovery")
    force_recovery_mode: str = opt(
        "", "force_recovery_mode", "recovery mode forced on subscribers", choices=RECOVERY_MODES
    )
    allowed_delta_types: tuple[str, ...] = opt(
        (), "allowed_delta_types", "delta encodings subscribers may ask for", choices=DELTA_TYPES
    )
    delta_publish: bool = opt(False, "delta_publish", "publish as delta-capable by default")
    allow_subscribe_for_anonymous: bool = opt(
        False, "allow_subscribe_for_anonymous", "anonymous may subscribe"
    )
    allow_subscribe_for_client: bool = opt(False, "allow_subscribe_for_client", "clients may subscribe")
    allow_publish_for_anonymous: bool = opt(False, "allow_publish_for_anonymous", "anonymous may publish")
    allow_publish_for_subscriber: bool = opt(False, "allow_publish_for_subscriber", "subscribers may publish")
    allow_publish_for_client: bool = opt(False, "allow_publish_for_client", "clients may publish")
    allow_presence_for_anonymous: bool = opt(
        False, "allow_presence_for_anonymous", "anonymous may ask presence"
    )
    allow_presence_for_subscriber: bool = opt(
        False, "allow_presence_for_subscriber", "subscribers may ask presence"
    )
    allow_presence_for_client: bool = opt(False, "allow_presence_for_client", "clients may ask presence")
    allow_history_for_anonymous: bool = opt(
        False, "allow_history_for_anonymous", "anonymous may read history"
    )
    allow_history_for_subscriber: bool = opt(
        False, "allow_history_for_subscriber", "subscribers may read history"
    )
    allow_history_for_client: bool = opt(False, "allow_history_for_client", "clients may read history")
    allow_user_limited_channels: bool = opt(
        False, "allow_user_limited_channels", "user-limited channels (#user) are open to their users"
    )
    channel_regex: str = opt("", "channel_regex", "RE2 pattern channel names must match")
    proxy_subscribe: bool = opt(False, "subscribe_proxy_enabled", "ask the subscribe proxy")
    proxy_publish: bool = opt(False, "publish_proxy_enabled", "ask the publish proxy")
    proxy_sub_refresh: bool = opt(False, "sub_refresh_proxy_enabled", "ask the sub_refresh proxy")
    proxy_subscribe_stream: bool = opt(False, "subscribe_stream_proxy_enabled", "not supported yet")
    proxy_subscribe_stream_bidirectional: bool = opt(
        False, "subscribe_stream_proxy_bidirectional", "not supported yet"
    )
    subscribe_proxy_name: str = opt("", "subscribe_proxy_name", "named proxy for subscribe")
    publish_proxy_name: str = opt("", "publish_proxy_name", "named proxy for publish")
    sub_refresh_proxy_name: str = opt("", "sub_refresh_proxy_name", "named proxy for sub_refresh")
    subscribe_stream_proxy_name: str = opt("", "subscribe_stream_proxy_name", "not supported yet")
    # The compiled channel_regex. Carried as a field so that dataclasses.replace (token overrides) copies
    # it instead of compiling the pattern again on every subscription.
    compiled_regex: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.channel_regex and self.compiled_regex is None:
            object.__setattr__(
                self, "compiled_regex", compile_channel_regex(self.channel_regex, "channel_regex")
            )

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        where: str = "channel options",
        default_history_meta_ttl: float = 0.0,
    ) -> ChannelOptions:
        """Options from a config mapping; ``where`` names the mapping in error messages.

        Raises ConfigError for an unknown key, a value of the wrong type or an inconsistent combination.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: expected an object, got {values!r}")
        canonical = _canonical_values(values, where)
        kwargs: dict[str, Any] = {}
        for name, value in canonical.items():
            kwargs[name] = coerce(f"{where}: {name}", _FIELDS[name], _TYPES[name], value)
        if kwargs.get("channel_regex"):
            kwargs["compiled_regex"] = compile_channel_regex(
                kwargs["channel_regex"], f"{where}: channel_regex"
            )
        if not kwargs.get("history_meta_ttl"):
            kwargs["history_meta_ttl"] = float(default_history_meta_ttl)
        options = cls(**kwargs)
        options.validate(where)
        return options

    def validate(self, where: str = "channel options") -> None:
        """Combinations Centrifugo refuses at start-up. Not run on construction: a subscription token may
        legitimately override force_recovery on a channel, and that copy must not raise."""
        if (self.history_size > 0) != (self.history_ttl > 0):
            raise ConfigError(f"{where}: history_size and history_ttl must both be set (or both be 0)")
        if self.force_recovery and not self.history_enabled:
            raise ConfigError(f"{where}: force_recovery needs history (history_size and history_ttl)")
        if self.force_positioning and not self.history_enabled:
            raise ConfigError(f"{where}: force_positioning needs history (history_size and history_ttl)")
        if self.history_meta_ttl > 0 and self.history_ttl > self.history_meta_ttl:
            raise ConfigError(
                f"{where}: history_ttl ({self.history_ttl:g}s) must not exceed history_meta_ttl "
                f"({self.history_meta_ttl:g}s), or the stream position would be forgotten before its data"
            )


def option_names() -> frozenset[str]:
    """Every v4/v5 option name (the dataclass fields a config may set)."""
    return _OPTION_NAMES


def compile_channel_regex(pattern: str, what: str) -> Any:
    # RE2, never `re`: the pattern is matched against client-chosen names, so matching must run in
    # linear time. Errors are reported through ConfigError instead of RE2's own stderr logging.
    opts = re2.Options()
    opts.log_errors = False
    try:
        return re2.compile(pattern, opts)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ConfigError(f"{what}: invalid regular expression {pattern!r}: {detail}") from exc


_FIELDS = {f.name: f for f in fields(ChannelOptions) if f.name != "compiled_regex"}
_TYPES = {name: kind for name, kind in get_type_hints(ChannelOptions).items() if name in _FIELDS}
_OPTION_NAMES = frozenset(_FIELDS)
# v6 renamed the proxy switches (``subscribe_proxy_enabled``); everything else kept its v5 name.
V6_ALIASES = {f.metadata["v6"]: name for name, f in _FIELDS.items() if f.metadata["v6"] != name}
# Every option: its name in a v6 namespace object → its field; and each field's type.
CHANNEL_V6_NAMES = {f.metadata["v6"]: name for name, f in _FIELDS.items()}
CHANNEL_OPTION_TYPES = dict(_TYPES)


def _canonical_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """v4/v5 names only: v6 and v3 names translated, unknown keys refused."""
    out: dict[str, Any] = {}
    v3: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: option names must be strings, got {key!r}")
        if key in _OPTION_NAMES:
            out[key] = value
        elif key in V6_ALIASES:
            target = V6_ALIASES[key]
            if target in values:
                raise ConfigError(f"{where}: both {key} and {target} are set; keep one")
            out[target] = value
        elif key in V3_KEYS:
            v3[key] = value
        else:
            raise ConfigError(f"{where}: unknown channel option {key!r}")
    if v3:
        for key, value in _from_v3(v3, out, where).items():
            out.setdefault(key, value)
    return out


def _from_v3(v3: Mapping[str, Any], explicit: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What a v3 options object meant, in v4 terms. Only fills keys the mapping does not set itself."""
    for key, value in v3.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be a boolean, got {value!r}")
    implied: dict[str, Any] = {name: v3[old] for old, name in V3_RENAMES.items() if old in v3}
    # v3 let every user into user-limited channels and every client into non-protected channels.
    implied["allow_user_limited_channels"] = True
    protected = v3.get("protected", False)
    implied["allow_subscribe_for_client"] = not protected
    if protected:
        # "anonymous" only ever widened client subscriptions, which "protected" switches off.
        implied.pop("allow_subscribe_for_anonymous", None)
    if v3.get("publish", False):
        # v3 had no separate anonymous publish switch: publishing clients included anonymous ones.
        implied["allow_publish_for_anonymous"] = True
    presence_off = v3.get("presence_disable_for_client", False) or v3.get(
        "presence_disabled_for_client", False
    )
    if explicit.get("presence") is True and not presence_off:
        implied["allow_presence_for_subscriber"] = True
        implied["allow_presence_for_anonymous"] = True
    history_off = v3.get("history_disable_for_client", False) or v3.get("history_disabled_for_client", False)
    if "history_size" in explicit and "history_ttl" in explicit and not history_off:
        implied["allow_history_for_subscriber"] = True
        implied["allow_history_for_anonymous"] = True
    if explicit.get("join_leave") is True:
        # v3 pushed join/leave to every subscriber; v4 made it opt-in per subscriber.
        implied["force_push_join_leave"] = True
    return implied
