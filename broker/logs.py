"""Logging: one line per event on stderr, in a logfmt-like shape.

    2026-11-28T08:31:25.123Z level=info role=shard-1 pid=123 msg="shard ready" logger=shards.main

Every process (supervisor, router, shards) calls :func:`setup_logging` once with its role, so that the
interleaved stderr of the whole server can be told apart by ``role`` and ``pid``. Messages are always
quoted; newlines, quotes and backslashes inside them are escaped, and a traceback is folded into one
``exc="..."`` field, so that one event never spans two lines.

Levels use Centrifugo's names: ``trace``, ``debug``, ``info``, ``warn`` (``warning`` accepted), ``error``
and ``none`` (nothing is logged).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_DISABLED = logging.CRITICAL + 10

LEVELS: dict[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": _DISABLED,
}

_LEVEL_NAMES = {
    TRACE: "trace",
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def quote(text: str) -> str:
    """``text`` as a double-quoted logfmt value that stays on one line."""
    return '"' + text.translate(_ESCAPES) + '"'


def level_number(level: str) -> int:
    """The :mod:`logging` level for a Centrifugo level name; unknown names fall back to info."""
    return LEVELS.get(level.strip().lower(), logging.INFO)


class LineFormatter(logging.Formatter):
    """Formats a record as a single logfmt line with timestamp, level, role and pid."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = _LEVEL_NAMES.get(record.levelno) or record.levelname.lower()
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            f"level={level}",
            f"role={self.role}",
            f"pid={record.process}",
            f"msg={quote(record.getMessage())}",
        ]
        if record.name != "root":
            parts.append(f"logger={record.name}")
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(f"exc={quote(self.formatException(record.exc_info).rstrip())}")
        if record.stack_info:
            parts.append(f"stack={quote(record.stack_info.rstrip())}")
        return " ".join(parts)


class _RoleHandler(logging.StreamHandler[TextIO]):
    """Marker type so that a second :func:`setup_logging` call replaces our handler, not others'."""


def setup_logging(level: str, role: str, stream: TextIO | None = None) -> None:
    """Configure the root logger: one line per event on ``stream`` (default stderr), tagged with ``role``.

    Calling it again (for example in a child process that inherited nothing, or after a role change)
    replaces the handler installed by the previous call.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _RoleHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _RoleHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(LineFormatter(role))
    root.addHandler(handler)
    root.setLevel(level_number(level))
    # The Redis client's debug lines are about its own handshake (optional features this Redis lacks),
    # not about Switchboard; ours say what a Redis failure did.
    logging.getLogger("redis").setLevel(max(logging.INFO, level_number(level)))
