"""Value types, the option declaration helper and the one coercer every config value goes through.

Kept apart from :mod:`broker.config` so that the channel options, whose fields the config loader reads
to know which keys exist, can use them without importing the loader (no other broker imports here).

Every option is a dataclass field declared with :func:`opt`: its annotation says what type it takes,
its metadata where it lives in Centrifugo v6's nested config (``v6``), a one-line description (``doc``)
and, where needed, its allowed values or lower bound. :func:`coerce` turns a raw value (from a JSON,
YAML or TOML file, or already turned from an environment string by :func:`from_env_text`) into the
field's type by reading those annotations, for the server config and the channel options alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, field
from typing import Any

import orjson


class ConfigError(ValueError):
    """A configuration value or file that cannot be used."""


class Duration(float):
    """Seconds, parsed from Go duration strings ("25s", "1m30s", "720h") or plain numbers."""


def opt(
    default: Any = MISSING,
    v6: str | None = None,
    doc: str = "",
    *,
    factory: Any = MISSING,
    choices: tuple[Any, ...] = (),
    minimum: float | None = None,
    positive: bool = False,
    string_or_list: bool = False,
    ext: bool = False,
) -> Any:
    """A config option: a dataclass field whose metadata the loader, the docs and the CLI read.

    ``v6`` is the option's path in Centrifugo v6's nested config (None: no nested spelling, or one the
    v6 translator handles itself); ``choices`` restricts a string (or each item of a list) to those
    values; ``minimum`` / ``positive`` bound a number; ``string_or_list`` lets a list option be given
    as one string (Centrifugo's Redis addresses); ``ext`` marks an option of Switchboard's own.
    """
    metadata = {
        "v6": v6,
        "doc": doc,
        "choices": choices,
        "minimum": minimum,
        "positive": positive,
        "string_or_list": string_or_list,
        "ext": ext,
    }
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> Duration:
    if isinstance(value, bool):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return Duration(value)
    if not isinstance(value, str):
        raise ConfigError(f"not a duration: {value!r}")
    text = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return Duration(float(text))
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos = 0
    total = 0.0
    for match in _GO_DURATION.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(body) or not body:
        raise ConfigError(f"not a duration: {value!r}")
    return Duration(sign * total)


def format_duration(seconds: float) -> str:
    """Go's time.Duration String() for whole seconds: 604800 → "168h0m0s"."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which Centrifugo applies to environment variables and flags."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"expected a boolean, got {text!r}")


def from_env_text(kind: Any, text: str) -> Any:
    """An environment (or flag) string as the raw value a file would hold for a field of type ``kind``:
    booleans as Go's ParseBool, lists space separated or JSON, objects and lists of objects JSON."""
    try:
        if kind is bool:
            return parse_bool(text)
        if kind is int:
            return int(text.strip())
        if kind in (list[str], tuple[str, ...]):
            stripped = text.strip()
            return orjson.loads(stripped) if stripped.startswith("[") else stripped.split()
        if kind in (dict[str, str], list[dict[str, Any]], dict[str, Any]):
            return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"cannot parse {text!r} as JSON: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot parse {text!r}") from None
    return text  # strings, and durations (parse_duration reads the text)


def coerce(where: str, spec: Field[Any], kind: Any, value: Any) -> Any:
    """``value`` as the type ``kind`` of option ``spec``; ``where`` names the option in errors."""
    meta = spec.metadata
    if meta.get("string_or_list") and isinstance(value, str):
        value = [value]
    out = _typed(where, kind, value)
    choices = meta.get("choices") or ()
    if choices:
        items = out if isinstance(out, tuple | list) else (out,)
        for item in items:
            if item not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise ConfigError(f"{where} must be one of {allowed}, got {item!r}")
    minimum = meta.get("minimum")
    if minimum is not None and out < minimum:
        raise ConfigError(f"{where} must not be below {minimum:g}, got {value!r}")
    if meta.get("positive") and out <= 0:
        raise ConfigError(f"{where} must be positive, got {value!r}")
    return out


def _typed(where: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected a boolean, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if kind in (Duration, float):
        if value is None:
            return kind(0)
        try:
            return kind(parse_duration(value))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if kind in (list[str], tuple[str, ...]):
        if value is None:
            value = []
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value) if kind == tuple[str, ...] else list(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    if kind == dict[str, str]:
        if isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
            return {str(k): v for k, v in value.items()}
        raise ConfigError(f"{where}: expected an object of strings, got {value!r}")
    if kind == list[dict[str, Any]]:
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            return [dict(v) for v in value]
        raise ConfigError(f"{where}: expected a list of objects, got {value!r}")
    raise ConfigError(f"{where}: unsupported option type {kind!r}")  # pragma: no cover - fields are typed
