"""Which backend answers which event: the proxies of one configuration, resolved once at start.

Two ways to configure them, as in Centrifugo v5:

* **flat** (default): one endpoint per event (``proxy_connect_endpoint``, ``proxy_refresh_endpoint``,
  ``proxy_rpc_endpoint``, ``proxy_subscribe_endpoint``, ``proxy_publish_endpoint``,
  ``proxy_sub_refresh_endpoint``), each with its ``_timeout``, sharing ``proxy_http_headers``,
  ``proxy_emulated_headers``, ``proxy_static_http_headers``, ``proxy_include_connection_meta`` and
  ``proxy_binary_encoding``. A channel namespace turns a channel event on with ``proxy_subscribe``,
  ``proxy_publish`` or ``proxy_sub_refresh``; every RPC goes to the RPC endpoint.
* **granular** (``granular_proxy_mode: true``): ``proxies`` is a list of named proxies, each with its own
  ``endpoint``, ``timeout``, ``http_headers``, ``emulated_headers``, ``static_http_headers``,
  ``include_connection_meta`` and ``binary_encoding``. ``connect_proxy_name`` / ``refresh_proxy_name``
  pick the connection-wide ones, a namespace's ``subscribe_proxy_name`` / ``publish_proxy_name`` /
  ``sub_refresh_proxy_name`` its channel ones, and ``rpc_proxy_name`` (methods without a namespace) or
  an ``rpc_namespaces`` entry's ``rpc_proxy_name`` the RPC one (``<namespace><boundary><method>``).

A proxy named but not defined, a channel event switched on without an endpoint, an endpoint that is not
``http(s)://`` or a non-positive timeout stops the server at start with a message naming the key: a
Centrifugo user must not find out at the first subscribe that the backend is never asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.config import Config
from broker.config_values import ConfigError, parse_duration

CHANNEL_KINDS = ("subscribe", "publish", "sub_refresh")
# v6 spelling of the channel switches (``subscribe_proxy_enabled``) next to v5's (``proxy_subscribe``).
_SWITCH_ALIASES = {f"{kind}_proxy_enabled": f"proxy_{kind}" for kind in CHANNEL_KINDS}
_PROXY_KEYS = frozenset(
    {
        "name",
        "endpoint",
        "timeout",
        "http_headers",
        "emulated_headers",
        "static_http_headers",
        "include_connection_meta",
        "binary_encoding",
    }
)
# Keys of a proxy object that only configure gRPC proxies: harmless when empty.
_GRPC_KEYS = frozenset(
    {"grpc_metadata", "grpc_cert_file", "grpc_credentials_key", "grpc_credentials_value", "grpc_compression"}
)
_URL = re.compile(r"^https?://[^/\s]+")
_NAME = re.compile(r"^[-a-zA-Z0-9_.]+$")


class ProxyConfigError(ConfigError):
    """A proxy setting that cannot work; the message names the key."""


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One backend endpoint and what its calls carry."""

    name: str
    endpoint: str
    timeout: float
    http_headers: frozenset[str] = frozenset()  # lower-case names of real request headers to forward
    emulated_headers: frozenset[str] = frozenset()  # lower-case names a client may supply itself
    static_http_headers: Mapping[str, str] = field(default_factory=dict)
    include_connection_meta: bool = False
    binary_encoding: bool = False


@dataclass(frozen=True, slots=True)
class ProxyTable:
    connect: ProxySpec | None = None
    refresh: ProxySpec | None = None
    rpc: ProxySpec | None = None  # RPC methods without a namespace (every method in flat mode)
    rpc_namespaces: Mapping[str, ProxySpec | None] = field(default_factory=dict)
    rpc_boundary: str = ":"
    granular: bool = False
    flat_channel: Mapping[str, ProxySpec] = field(default_factory=dict)  # flat mode: kind → endpoint
    named: Mapping[str, ProxySpec] = field(default_factory=dict)  # granular mode: name → proxy

    def for_channel(self, kind: str, options: Any) -> ProxySpec | None:
        """The proxy of a channel event (``subscribe``, ``publish``, ``sub_refresh``) for a channel with
        ``options`` (:class:`broker.channel_options.ChannelOptions`), or None when it is off there."""
        if self.granular:
            name = getattr(options, f"{kind}_proxy_name")
            return self.named.get(name) if name else None
        if getattr(options, f"proxy_{kind}"):
            return self.flat_channel.get(kind)
        return None

    def for_rpc(self, method: str) -> ProxySpec | None:
        """The proxy of an RPC method; None: no handler (104)."""
        if self.granular and self.rpc_namespaces and self.rpc_boundary in method:
            namespace = method.split(self.rpc_boundary, 1)[0]
            if namespace in self.rpc_namespaces:
                return self.rpc_namespaces[namespace]
        return self.rpc

    def all(self) -> list[ProxySpec]:
        """Every proxy some event may call."""
        found = [self.connect, self.refresh, self.rpc, *self.rpc_namespaces.values()]
        found += [*self.flat_channel.values(), *self.named.values()]
        unique: dict[tuple[str, str], ProxySpec] = {}
        for spec in found:
            if spec is not None:
                unique[(spec.name, spec.endpoint)] = spec
        return list(unique.values())

    @property
    def forwarded_header_names(self) -> frozenset[str]:
        """Real request headers some proxy forwards: what a connection keeps of its request."""
        names: frozenset[str] = frozenset()
        for spec in self.all():
            names |= spec.http_headers
        return names

    @property
    def emulated_header_names(self) -> frozenset[str]:
        names: frozenset[str] = frozenset()
        for spec in self.all():
            names |= spec.emulated_headers
        return names


def proxy_table(cfg: Config) -> ProxyTable:
    """The proxies ``cfg`` configures; raises :class:`ProxyConfigError`."""
    if cfg.granular_proxy_mode:
        return _granular(cfg)
    return _flat(cfg)


def _flat(cfg: Config) -> ProxyTable:
    for key in ("connect_proxy_name", "refresh_proxy_name", "rpc_proxy_name"):
        if getattr(cfg, key):
            raise ProxyConfigError(f"{key} needs granular_proxy_mode: true")
    if cfg.proxies:
        raise ProxyConfigError("proxies needs granular_proxy_mode: true")
    if cfg.rpc_namespaces:
        raise ProxyConfigError(
            "rpc_namespaces needs granular_proxy_mode: true (every RPC goes to proxy_rpc_endpoint)"
        )
    real, emulated = _lower(cfg.proxy_http_headers), _lower(cfg.proxy_emulated_headers)
    static = dict(cfg.proxy_static_http_headers)
    specs: dict[str, ProxySpec] = {}
    for kind in ("connect", "refresh", "rpc", *CHANNEL_KINDS):
        endpoint = getattr(cfg, f"proxy_{kind}_endpoint")
        timeout = float(getattr(cfg, f"proxy_{kind}_timeout"))
        if timeout <= 0:
            raise ProxyConfigError(f"proxy_{kind}_timeout must be positive")
        if endpoint:
            _check_endpoint(f"proxy_{kind}_endpoint", endpoint)
            specs[kind] = ProxySpec(
                kind,
                endpoint,
                timeout,
                http_headers=real,
                emulated_headers=emulated,
                static_http_headers=static,
                include_connection_meta=cfg.proxy_include_connection_meta,
                binary_encoding=cfg.proxy_binary_encoding,
            )
    for where, options in _channel_option_sets(cfg):
        for kind in CHANNEL_KINDS:
            if _switch(options, kind) and kind not in specs:
                raise ProxyConfigError(f"{where}proxy_{kind} is on but proxy_{kind}_endpoint is not set")
    return ProxyTable(
        connect=specs.get("connect"),
        refresh=specs.get("refresh"),
        rpc=specs.get("rpc"),
        flat_channel={kind: specs[kind] for kind in CHANNEL_KINDS if kind in specs},
    )


def _granular(cfg: Config) -> ProxyTable:
    for kind in ("connect", "refresh", "rpc", *CHANNEL_KINDS):
        if getattr(cfg, f"proxy_{kind}_endpoint"):
            raise ProxyConfigError(
                f"proxy_{kind}_endpoint is not used with granular_proxy_mode: define it in proxies"
            )
    named: dict[str, ProxySpec] = {}
    for index, raw in enumerate(cfg.proxies):
        spec = _named_proxy(raw, f"proxies[{index}]")
        if spec.name in named:
            raise ProxyConfigError(f"proxies: the name {spec.name!r} is used twice")
        named[spec.name] = spec

    def pick(key: str, name: Any) -> ProxySpec | None:
        if name in ("", None):
            return None
        if not isinstance(name, str) or name not in named:
            raise ProxyConfigError(f"{key}: no proxy named {name!r} in proxies")
        return named[name]

    for where, options in _channel_option_sets(cfg):
        for kind in CHANNEL_KINDS:
            name = options.get(f"{kind}_proxy_name", "")
            pick(f"{where}{kind}_proxy_name", name)
            if _switch(options, kind) and not name:
                raise ProxyConfigError(f"{where}proxy_{kind} is on: name the proxy in {kind}_proxy_name")
    rpc_namespaces: dict[str, ProxySpec | None] = {}
    boundary = cfg.rpc_namespace_boundary
    if not boundary:
        raise ProxyConfigError("rpc_namespace_boundary must not be empty")
    for index, entry in enumerate(cfg.rpc_namespaces):
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or boundary in name:
            raise ProxyConfigError(f"rpc_namespaces[{index}]: invalid name {name!r}")
        if name in rpc_namespaces:
            raise ProxyConfigError(f"rpc_namespaces: the name {name!r} is used twice")
        unknown = set(entry) - {"name", "rpc_proxy_name"}
        if unknown:
            raise ProxyConfigError(f"rpc_namespaces[{index}]: unknown keys {', '.join(sorted(unknown))}")
        rpc_namespaces[name] = pick(f"rpc_namespaces[{index}].rpc_proxy_name", entry.get("rpc_proxy_name"))
    return ProxyTable(
        connect=pick("connect_proxy_name", cfg.connect_proxy_name),
        refresh=pick("refresh_proxy_name", cfg.refresh_proxy_name),
        rpc=pick("rpc_proxy_name", cfg.rpc_proxy_name),
        rpc_namespaces=rpc_namespaces,
        rpc_boundary=boundary,
        granular=True,
        named=named,
    )


def _named_proxy(raw: Any, where: str) -> ProxySpec:
    if not isinstance(raw, dict):
        raise ProxyConfigError(f"{where} must be an object")
    for key, value in raw.items():
        if key in _GRPC_KEYS:
            if value not in ("", None, [], {}, False):
                raise ProxyConfigError(f"{where}.{key}: gRPC proxies are not supported yet")
        elif key not in _PROXY_KEYS:
            raise ProxyConfigError(f"{where}: unknown key {key!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProxyConfigError(f"{where}.name must be a non-empty name, got {name!r}")
    endpoint = raw.get("endpoint")
    if not isinstance(endpoint, str):
        raise ProxyConfigError(f"{where}.endpoint must be a string")
    _check_endpoint(f"{where}.endpoint", endpoint)
    try:
        timeout = float(parse_duration(raw.get("timeout", "1s")))
    except ValueError as exc:
        raise ProxyConfigError(f"{where}.timeout: {exc}") from None
    if timeout <= 0:
        raise ProxyConfigError(f"{where}.timeout must be positive")
    static = raw.get("static_http_headers") or {}
    if not isinstance(static, dict) or not all(isinstance(v, str) for v in static.values()):
        raise ProxyConfigError(f"{where}.static_http_headers must be an object of strings")
    flags = {}
    for key in ("include_connection_meta", "binary_encoding"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ProxyConfigError(f"{where}.{key} must be a boolean")
        flags[key] = value
    return ProxySpec(
        name,
        endpoint,
        timeout,
        http_headers=_lower(_strings(raw.get("http_headers"), f"{where}.http_headers")),
        emulated_headers=_lower(_strings(raw.get("emulated_headers"), f"{where}.emulated_headers")),
        static_http_headers={str(k): v for k, v in static.items()},
        **flags,
    )


def _channel_option_sets(cfg: Config) -> list[tuple[str, Mapping[str, Any]]]:
    sets: list[tuple[str, Mapping[str, Any]]] = [("", cfg.channel_options)]
    for ns in cfg.namespaces:
        sets.append((f"namespace {ns.get('name')!r}: ", ns))
    return sets


def _switch(options: Mapping[str, Any], kind: str) -> bool:
    for key, value in options.items():
        if _SWITCH_ALIASES.get(key, key) == f"proxy_{kind}" and value is True:
            return True
    return False


def _check_endpoint(key: str, endpoint: str) -> None:
    if not _URL.match(endpoint):
        raise ProxyConfigError(f"{key} must be an http:// or https:// URL, got {endpoint!r}")


def _strings(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProxyConfigError(f"{key} must be a list of strings")
    return value


def _lower(names: list[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)
