"""The values the engines exchange: stream positions and the results of publishing and reading.

Semantics follow Centrifugo's (reference §10):

* a channel has history when ``history_size > 0 and history_ttl > 0``; its publications get offsets
  1, 2, 3 ... within an *epoch*, a random string that changes whenever the stream's meta is lost;
* the publications expire after ``history_ttl`` seconds without a publish, but the position (top offset
  and epoch) survives until ``history_meta_ttl`` seconds without a publish or a read;
* a ``history_meta_ttl`` of 0 or less means the meta never expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from broker.publication import Publication

# The idempotency window Centrifugo documents for publish/broadcast ``idempotency_key``.
DEFAULT_IDEMPOTENCY_TTL = 300.0


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """The top of a stream: the offset of its last publication (0 when none yet) and its epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish did. ``duplicate`` means an earlier publish with the same idempotency key already
    happened: nothing was stored and the caller must not deliver the publication again."""

    offset: int
    epoch: str
    duplicate: bool = False


@dataclass(slots=True)
class HistoryResult:
    publications: list[Publication]
    position: StreamPosition


class RecoveryResult(NamedTuple):
    """Outcome of a recovery attempt (see ``HistoryEngine.recover``); a tuple, so callers may unpack it
    as ``publications, position, recovered``."""

    publications: list[Publication]
    position: StreamPosition
    recovered: bool
