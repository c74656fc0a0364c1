"""Value types and parsers shared by the config and the channel options (no other broker imports).

Kept apart from :mod:`broker.config` so that the channel options, whose fields the config loader reads
to know which keys exist, can use them without importing the loader.
"""

from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """A configuration value or file that cannot be used."""


class Duration(float):
    """Seconds, parsed from Go duration strings ("25s", "1m30s", "720h") or plain numbers."""


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
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return Duration(float(text))
    if text == "0":
        return Duration(0)
    pos = 0
    total = 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ConfigError(f"not a duration: {value!r}")
    return Duration(total)


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
