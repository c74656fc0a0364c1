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
from typing import Any

import re2

from broker.config_values import ConfigError, parse_duration

RECOVERY_MODES = frozenset({"", "stream", "cache"})
DELTA_TYPES = frozenset({"fossil"})

_BOOL_OPTIONS = frozenset(
    {
        "presence",
        "join_leave",
        "force_push_join_leave",
        "force_positioning",
        "allow_positioning",
        "force_recovery",
        "allow_recovery",
        "delta_publish",
        "allow_subscribe_for_anonymous",
        "allow_subscribe_for_client",
        "allow_publish_for_anonymous",
        "allow_publish_for_subscriber",
        "allow_publish_for_client",
        "allow_presence_for_anonymous",
        "allow_presence_for_subscriber",
        "allow_presence_for_client",
        "allow_history_for_anonymous",
        "allow_history_for_subscriber",
        "allow_history_for_client",
        "allow_user_limited_channels",
        "proxy_subscribe",
        "proxy_publish",
        "proxy_sub_refresh",
        "proxy_subscribe_stream",
        "proxy_subscribe_stream_bidirectional",
    }
)
_STRING_OPTIONS = frozenset(
    {"subscribe_proxy_name", "publish_proxy_name", "sub_refresh_proxy_name", "subscribe_stream_proxy_name"}
)
_DURATION_OPTIONS = frozenset({"history_ttl", "history_meta_ttl"})

# v6 renamed the proxy switches; everything else kept its v5 name.
V6_ALIASES = {
    "subscribe_proxy_enabled": "proxy_subscribe",
    "publish_proxy_enabled": "proxy_publish",
    "sub_refresh_proxy_enabled": "proxy_sub_refresh",
    "subscribe_stream_proxy_enabled": "proxy_subscribe_stream",
}

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
    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    history_ttl: float = 0.0  # seconds
    history_meta_ttl: float = 0.0  # seconds; 0 = the global history_meta_ttl (filled in by from_mapping)
    force_positioning: bool = False
    allow_positioning: bool = False
    force_recovery: bool = False
    allow_recovery: bool = False
    force_recovery_mode: str = ""
    allowed_delta_types: tuple[str, ...] = ()
    delta_publish: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_subscribe_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_history_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_user_limited_channels: bool = False
    channel_regex: str = ""
    # Proxy switches are stored so that configs load unchanged; the proxy calls themselves live elsewhere.
    proxy_subscribe: bool = False
    proxy_publish: bool = False
    proxy_sub_refresh: bool = False
    proxy_subscribe_stream: bool = False
    proxy_subscribe_stream_bidirectional: bool = False
    subscribe_proxy_name: str = ""
    publish_proxy_name: str = ""
    sub_refresh_proxy_name: str = ""
    subscribe_stream_proxy_name: str = ""
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
            kwargs[name] = _coerce(name, value, where)
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


_OPTION_NAMES = frozenset(f.name for f in fields(ChannelOptions)) - {"compiled_regex"}


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


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in _BOOL_OPTIONS:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a boolean, got {value!r}")
        return value
    if name in _STRING_OPTIONS:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
        return value
    if name in _DURATION_OPTIONS:
        if value is None:
            return 0.0
        try:
            seconds = float(parse_duration(value))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {name}: {exc}") from exc
        if seconds < 0:
            raise ConfigError(f"{where}: {name} must not be negative, got {value!r}")
        return seconds
    if name == "history_size":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: history_size must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: history_size must not be negative, got {value}")
        return value
    if name == "force_recovery_mode":
        if not isinstance(value, str) or value not in RECOVERY_MODES:
            raise ConfigError(f'{where}: force_recovery_mode must be "", "stream" or "cache", got {value!r}')
        return value
    if name == "allowed_delta_types":
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: allowed_delta_types must be a list of strings, got {value!r}")
        unknown = [v for v in value if v not in DELTA_TYPES]
        if unknown:
            raise ConfigError(f"{where}: unknown delta type {unknown[0]!r} (supported: fossil)")
        return tuple(value)
    if name == "channel_regex":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: channel_regex must be a string, got {value!r}")
        return value
    raise ConfigError(
        f"{where}: unknown channel option {name!r}"
    )  # pragma: no cover - names are checked first
