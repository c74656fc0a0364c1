"""Configuration from environment variables: Centrifugo v6 names, v4/v5 names, and our own prefix.

``CENTRIFUGO_`` + the v6 path upper-cased with dots as underscores (``CENTRIFUGO_HTTP_API_KEY``,
``CENTRIFUGO_UNI_HTTP_STREAM_ENABLED``, ``CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE``), or + the v4/v5
flat key (``CENTRIFUGO_API_KEY``); ``SWITCHBOARD_`` takes the same names and wins over ``CENTRIFUGO_``.
Values are strings: booleans as Go's ParseBool, lists space separated (or JSON), namespaces, RPC
namespaces and proxies as JSON. ``CENTRIFUGO_CHANNEL_NAMESPACES_<NAME>_<OPTION>`` overrides one option
of a namespace the file (or ``CENTRIFUGO_CHANNEL_NAMESPACES``) defines; ``RPC_NAMESPACES_`` and
``PROXIES_`` work the same way. An empty variable counts as unset. A variable with either prefix that
names nothing is reported (``unknown``), except Kubernetes' service variables and ``CENTRIFUGO_VAR_*``,
as Centrifugo does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.config_values import ConfigError, from_env_text, parse_bool

PREFIXES = ("CENTRIFUGO_", "SWITCHBOARD_")  # in this order: the later one wins
_KUBERNETES = re.compile(r"^(?:CENTRIFUGO|SWITCHBOARD)(?:_[A-Z0-9_]+)?_(PORT|SERVICE_)")
_RESERVED = ("CENTRIFUGO_VAR_", "SWITCHBOARD_VAR_")
# Lists of named objects whose items a variable may override one key of, and the keys it may name.
ITEM_LISTS = ("channel.namespaces", "rpc.namespaces", "proxies")


@dataclass(frozen=True)
class EnvSchema:
    """Which variable names mean what (built by broker.config from the option declarations)."""

    flat: Mapping[str, Any]  # v4/v5 flat key → its type
    nested: Mapping[str, Any]  # v6 path → its type
    item_keys: Mapping[str, Mapping[str, Any]]  # item list path → key in an item → its type


@dataclass
class EnvReading:
    nested: dict[str, Any] = field(default_factory=dict)  # a v6 document: path → typed value
    flat: dict[str, Any] = field(default_factory=dict)  # v4/v5 flat key → typed value
    items: list[tuple[str, str, str, Any, str]] = field(default_factory=list)  # (list, NAME, key, value, var)
    unknown: list[str] = field(default_factory=list)  # variable names that name nothing


def name_for_env(name: str) -> str:
    """An item's name as it appears in a variable: upper case, ``.`` and ``-`` as ``_``."""
    return name.upper().replace(".", "_").replace("-", "_")


def read_env(environ: Mapping[str, str], schema: EnvSchema) -> EnvReading:
    reading = EnvReading()
    nested_names = {path.upper().replace(".", "_"): path for path in schema.nested}
    item_prefixes = {path.upper().replace(".", "_") + "_": path for path in ITEM_LISTS}
    for prefix in PREFIXES:
        for var, text in sorted(environ.items()):
            if not var.startswith(prefix) or text == "" or var.startswith(_RESERVED):
                continue
            name = var[len(prefix) :]
            what = nested_names.get(name) or name.lower()
            try:
                if name in nested_names:
                    path = nested_names[name]
                    _set_path(reading.nested, path, env_value(schema.nested[path], text))
                elif name.lower() in schema.flat:
                    key = name.lower()
                    reading.flat[key] = env_value(schema.flat[key], text)
                elif not _item(reading, var, name, text, item_prefixes, schema) and not _KUBERNETES.match(
                    var
                ):
                    reading.unknown.append(var)
            except ConfigError as exc:
                raise ConfigError(f"{var} ({what}): {exc}") from None
    return reading


def _item(
    reading: EnvReading, var: str, name: str, text: str, prefixes: Mapping[str, str], schema: EnvSchema
) -> bool:
    for env_prefix, path in prefixes.items():
        if not name.startswith(env_prefix):
            continue
        rest = name[len(env_prefix) :]
        # Item names may hold underscores too: the longest key that ends the name is the key.
        keys = sorted(schema.item_keys[path], key=len, reverse=True)
        for key in keys:
            suffix = "_" + key.upper().replace(".", "_")
            if rest.endswith(suffix) and len(rest) > len(suffix):
                value = env_value(schema.item_keys[path][key], text)
                reading.items.append((path, rest[: -len(suffix)], key, value, var))
                return True
    return False


def env_value(kind: Any, text: str) -> Any:
    """An environment or flag string as the value a file would hold for an option of type ``kind``."""
    if kind is Any:
        # A not-supported-yet switch: whatever a file could hold, so that "false" turns it off.
        try:
            return parse_bool(text)
        except ConfigError:
            pass
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return from_env_text(kind, text)


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def apply_items(lists: Mapping[str, Any], reading: EnvReading) -> list[str]:
    """Apply per-item overrides to the lists (path → list of objects) they name; returns the variables
    whose item does not exist (reported as unknown)."""
    missing: list[str] = []
    for path, env_name, key, value, var in reading.items:
        items = lists.get(path)
        target = None
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and name_for_env(str(item.get("name", ""))) == env_name:
                target = item
        if target is None:
            missing.append(var)
            continue
        _set_path(target, key, value)
    return missing


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` deep-merged onto ``base``: objects merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
