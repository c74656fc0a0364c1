"""Centrifugo v6's nested configuration, read into the v4/v5 flat keys the rest of the server uses.

v6 moved every key into a block (``client.token.hmac_secret_key``, ``http_api.key``,
``uni_http_stream.enabled``, ...). Most keys move one to one: the option declarations carry their v6
path (``opt(..., v6=...)``) and :class:`Schema` turns those into a path → flat key table. Proxies are
the exception: v6 configures each one as an object of its own (``client.proxy.connect``,
``channel.proxy.subscribe``, ``rpc.proxy``, named ``proxies``), referenced from namespaces by name
(``"default"`` meaning the event's own block). They become the granular form: one named proxy per
object, names resolved here so that a reference to a proxy that is not configured names the key.

A file is either form, never both: :func:`generation` tells which, and refuses a mix naming the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.config_values import ConfigError

# Top-level blocks of the v6 form. A v4/v5 key of the same name holds a scalar (``admin: true``,
# ``engine: "redis"``), a v6 block an object: the value's type tells them apart.
V6_SECTIONS = frozenset(
    {
        "client",
        "channel",
        "rpc",
        "http_api",
        "grpc_api",
        "http_server",
        "node",
        "log",
        "engine",
        "broker",
        "presence_manager",
        "admin",
        "prometheus",
        "health",
        "debug",
        "swagger",
        "websocket",
        "sse",
        "http_stream",
        "uni_websocket",
        "uni_sse",
        "uni_http_stream",
        "uni_grpc",
        "emulation",
        "shutdown",
        "usage_stats",
        "opentelemetry",
        "graphite",
        "webtransport",
    }
)
# Top-level v6 keys that are lists, whatever the form.
V6_LISTS = frozenset({"proxies", "consumers"})

CHANNEL_PROXY_KINDS = ("subscribe", "publish", "sub_refresh")
CONNECT_PROXY = "client.proxy.connect"
REFRESH_PROXY = "client.proxy.refresh"
RPC_PROXY = "rpc.proxy"
# The keys of one v6 proxy object, and what their values are (for environment variables).
PROXY_KEYS: dict[str, Any] = {
    "endpoint": str,
    "timeout": str,
    "http_headers": list[str],
    "emulated_headers": list[str],
    "binary_encoding": bool,
    "include_connection_meta": bool,
    "http.static_headers": dict[str, str],
}
_GRPC_PROXY_KEYS = frozenset({"grpc_metadata", "grpc"})
_HTTP_SUBKEYS = frozenset({"static_headers", "tls", "status_to_code_transforms"})


@dataclass(frozen=True)
class Schema:
    """What the v6 form may hold: leaf path → flat key, for every option with a v6 path."""

    paths: Mapping[str, str]  # "client.token.hmac_secret_key" → "token_hmac_secret_key"
    channel_options: Mapping[str, str]  # v6 option name in a namespace → flat option name
    feature_sections: tuple[str, ...] = ()  # prefixes of not-supported-yet features' settings
    inert: frozenset[str] = frozenset()
    prefixes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        found: set[str] = set()
        for path in self.paths:
            parts = path.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts)))
        object.__setattr__(self, "prefixes", frozenset(found))


def generation(doc: Mapping[str, Any], flat_keys: frozenset[str]) -> str:
    """``"v6"`` or ``"v5"`` for a file's top level (``"v6"`` when it says neither, as an empty file).

    Raises ConfigError naming both kinds of keys when a file mixes them."""
    nested = sorted(k for k, v in doc.items() if k in V6_SECTIONS and isinstance(v, dict))
    flat = sorted(
        k for k, v in doc.items() if k in flat_keys and not (k in V6_SECTIONS and isinstance(v, dict))
    )
    flat = [k for k in flat if k not in V6_LISTS]
    if nested and flat:
        raise ConfigError(
            f"the config mixes Centrifugo v6 blocks ({', '.join(nested)}) with v4/v5 flat keys "
            f"({', '.join(flat)}); write it in one form (v6: e.g. http_api.key instead of api_key)"
        )
    return "v5" if flat else "v6"


@dataclass
class _Flattening:
    schema: Schema
    flat: dict[str, Any] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    proxies: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → our granular object
    references: bool = False


def flatten(doc: Mapping[str, Any], schema: Schema) -> tuple[dict[str, Any], list[str]]:
    """The flat keys a v6 document means, and the paths it holds that are not options (unknown)."""
    state = _Flattening(schema)
    # Proxy blocks first: namespaces and RPC settings refer to them by name.
    _proxy_blocks(doc, state)
    _walk(doc, "", state)
    if state.proxies or state.references:
        state.flat["granular_proxy_mode"] = True
    if state.proxies or "proxies" in doc:
        state.flat["proxies"] = list(state.proxies.values())
    return state.flat, state.unknown


def _walk(node: Mapping[str, Any], prefix: str, state: _Flattening) -> None:
    schema = state.schema
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in _HANDLERS:
            _HANDLERS[path](value, path, state)
        elif path in schema.paths:
            state.flat[schema.paths[path]] = value
        elif path in schema.inert or path.startswith(schema.feature_sections):
            continue
        elif path in schema.prefixes and isinstance(value, Mapping):
            _walk(value, f"{path}.", state)
        else:
            state.unknown.append(path)


# --- proxies ------------------------------------------------------------------------------------------


def _proxy_blocks(doc: Mapping[str, Any], state: _Flattening) -> None:
    client = _block(doc, "client")
    client_proxy = _block(client, "proxy", "client.")
    _only(client_proxy, {"connect", "refresh"}, "client.proxy")
    for kind, name in (("connect", CONNECT_PROXY), ("refresh", REFRESH_PROXY)):
        block = _block(client_proxy, kind, "client.proxy.")
        enabled = block.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{name}.enabled: expected a boolean, got {enabled!r}")
        if enabled:
            state.proxies[name] = _proxy(block, name, extra={"enabled"})
            state.flat[f"{kind}_proxy_name"] = name
        else:
            _proxy(block, name, extra={"enabled"}, check_only=True)
    channel_proxy = _block(_block(doc, "channel"), "proxy", "channel.")
    _only(channel_proxy, {*CHANNEL_PROXY_KINDS, "subscribe_stream", "state", "cache_empty"}, "channel.proxy")
    for kind in CHANNEL_PROXY_KINDS:
        name = f"channel.proxy.{kind}"
        block = _block(channel_proxy, kind, "channel.proxy.")
        if block.get("endpoint"):
            state.proxies[name] = _proxy(block, name)
    rpc_block = _block(_block(doc, "rpc"), "proxy", "rpc.")
    if rpc_block.get("endpoint"):
        state.proxies[RPC_PROXY] = _proxy(rpc_block, RPC_PROXY)
    named = doc.get("proxies") or []
    if not isinstance(named, list):
        raise ConfigError("proxies: expected a list of objects")
    for index, raw in enumerate(named):
        where = f"proxies[{index}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected an object")
        given = raw.get("name")
        if not isinstance(given, str) or not given or given == "default":
            raise ConfigError(f'{where}.name must be a name other than "default", got {given!r}')
        if given in state.proxies:
            raise ConfigError(f"proxies: the name {given!r} is used twice")
        state.proxies[given] = _proxy(raw, where, extra={"name"})
        state.proxies[given]["name"] = given


def _only(node: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(node) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(unknown)}")


def _block(node: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value = node.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}{key}: expected an object, got {value!r}")
    return value


def _proxy(
    raw: Mapping[str, Any], where: str, *, extra: set[str] | None = None, check_only: bool = False
) -> dict[str, Any]:
    """A v6 proxy object in the granular form broker.proxy.table reads (it checks the values)."""
    allowed = {"endpoint", "timeout", "http_headers", "emulated_headers", "binary_encoding"}
    allowed |= {"include_connection_meta", "http", *_GRPC_PROXY_KEYS, *(extra or set())}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}")
    http = _block(raw, "http", f"{where}.")
    for key, value in http.items():
        if key not in _HTTP_SUBKEYS:
            raise ConfigError(f"{where}.http: unknown key {key!r}")
        if key != "static_headers" and _is_on(value):
            raise ConfigError(f"{where}.http.{key} is not supported yet (remove it)")
    for key in _GRPC_PROXY_KEYS:
        if _is_on(raw.get(key)):
            raise ConfigError(f"{where}.{key}: gRPC proxies are not supported yet")
    out: dict[str, Any] = {"name": where}
    for key in ("endpoint", "timeout", "http_headers", "emulated_headers"):
        if key in raw:
            out[key] = raw[key]
    for key in ("binary_encoding", "include_connection_meta"):
        if key in raw:
            out[key] = raw[key]
    if "static_headers" in http:
        out["static_http_headers"] = http["static_headers"]
    if not check_only and not out.get("endpoint"):
        raise ConfigError(f"{where}.endpoint is not set")
    return out


def _is_on(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_is_on(v) for v in value.values())
    return value not in (None, "", False, 0, [], {})


def _proxy_name(state: _Flattening, value: Any, default: str, where: str) -> str:
    """A namespace's ``*_proxy_name``: ``"default"`` (or unset) is the event's own block."""
    state.references = True
    name = default if value in (None, "", "default") else value
    if not isinstance(name, str) or name not in state.proxies:
        configured = f"{default}.endpoint is not set" if name == default else f"no proxy named {name!r}"
        raise ConfigError(f"{where}: the proxy is switched on but {configured}")
    return name


def _channel_options(options: Any, where: str, state: _Flattening) -> dict[str, Any]:
    """A v6 namespace (or without_namespace) object as v5 channel options."""
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: expected an object, got {options!r}")
    out = dict(options)
    for kind in CHANNEL_PROXY_KINDS:
        switch, name_key = f"{kind}_proxy_enabled", f"{kind}_proxy_name"
        if out.get(switch) is True:
            out[name_key] = _proxy_name(
                state, out.get(name_key), f"channel.proxy.{kind}", f"{where}.{switch}"
            )
        else:
            out.pop(name_key, None)
    return out


def _without_namespace(value: Any, path: str, state: _Flattening) -> None:
    for key, option in _channel_options(value, path, state).items():
        if key in state.schema.channel_options or key in _V3_OR_V5_ONLY:
            state.flat[state.schema.channel_options.get(key, key)] = option
        else:
            state.unknown.append(f"{path}.{key}")


# v5 channel option names a v6 namespace object may still spell (channel_options reads them).
_V3_OR_V5_ONLY = frozenset(
    {"proxy_subscribe", "proxy_publish", "proxy_sub_refresh", "proxy_subscribe_stream"}
)


def _namespaces(value: Any, path: str, state: _Flattening) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of objects, got {value!r}")
    state.flat["namespaces"] = [_channel_options(ns, f"{path}[{i}]", state) for i, ns in enumerate(value)]


def _rpc_without_namespace(value: Any, path: str, state: _Flattening) -> None:
    block = _block({"b": value}, "b", path)
    unknown = set(block) - {"proxy_enabled", "proxy_name"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    if block.get("proxy_enabled") is True:
        state.flat["rpc_proxy_name"] = _proxy_name(
            state, block.get("proxy_name"), RPC_PROXY, f"{path}.proxy_enabled"
        )


def _rpc_namespaces(value: Any, path: str, state: _Flattening) -> None:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of objects, got {value!r}")
    out = []
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected an object")
        unknown = set(entry) - {"name", "proxy_enabled", "proxy_name"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        name = ""
        if entry.get("proxy_enabled") is True:
            name = _proxy_name(state, entry.get("proxy_name"), RPC_PROXY, f"{where}.proxy_enabled")
        out.append({"name": entry.get("name"), "rpc_proxy_name": name})
    state.flat["rpc_namespaces"] = out


def _handled(value: Any, path: str, state: _Flattening) -> None:
    """Blocks read by _proxy_blocks before the walk."""


_HANDLERS = {
    "channel.without_namespace": _without_namespace,
    "channel.namespaces": _namespaces,
    "channel.proxy": _handled,
    "client.proxy": _handled,
    "rpc.proxy": _handled,
    "rpc.without_namespace": _rpc_without_namespace,
    "rpc.namespaces": _rpc_namespaces,
    "proxies": _handled,
}
