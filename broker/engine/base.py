"""The interface every history engine implements (memory now; Redis or NATS later).

Engines are sans-I/O and clock-free: every call receives ``now`` (seconds, from whatever monotonic or wall
clock the caller uses, as long as it is the same one for every call), so tests drive time by passing
numbers and a shard calls the engine from its event loop without awaiting. Only a channel's writer shard
calls ``publish`` for it, which is what makes offsets a single total order per channel.

Semantics follow Centrifugo's (reference §10):

* a channel has history when ``history_size > 0 and history_ttl > 0``; its publications get offsets
  1, 2, 3 ... within an *epoch*, a random string that changes whenever the stream's meta is lost;
* the publications expire after ``history_ttl`` seconds without a publish, but the position (top offset
  and epoch) survives until ``history_meta_ttl`` seconds without a publish or a read;
* a ``history_meta_ttl`` of 0 or less means the meta never expires.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

from broker.ipc.pubsub import Publication

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


class HistoryEngine(ABC):
    """A channel → stream store. Publications handed to ``publish`` are kept by reference and returned by
    reads as they are: callers must treat them as immutable once published."""

    @abstractmethod
    def publish(
        self,
        publication: Publication,
        *,
        history_size: int,
        history_ttl: float,
        history_meta_ttl: float,
        now: float,
        skip_history: bool = False,
        idempotency_key: str = "",
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
    ) -> PublishResult:
        """Assign ``publication`` its offset and epoch (set on the object) and store it.

        Without history (size or ttl not positive) or with ``skip_history`` nothing is stored, the
        publication keeps offset 0 and the result is ``(0, "")`` — as Centrifugo, which publishes such a
        message as if the channel had no history. A repeated ``idempotency_key`` within
        ``idempotency_ttl`` seconds returns the first publish's result with ``duplicate=True``.
        """

    @abstractmethod
    def history(
        self,
        channel: str,
        *,
        limit: int,
        since: StreamPosition | None,
        reverse: bool,
        now: float,
        history_meta_ttl: float,
    ) -> HistoryResult:
        """Read stored publications and the current position.

        ``limit``: 0 → position only, negative → all, n → at most n. ``since``: only offsets after
        ``since.offset`` (or, with ``reverse``, before it, newest first). Raises
        ``errors.UNRECOVERABLE_POSITION`` when ``since.epoch`` is set and differs from the current epoch,
        and ``errors.BAD_REQUEST`` for ``reverse`` with ``since.offset == 0``. Creates the stream's meta
        (a fresh epoch) when none exists, and refreshes its expiry.
        """

    @abstractmethod
    def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        """The stream top, creating the meta (a fresh epoch) if none exists and refreshing its expiry."""

    @abstractmethod
    def remove_history(self, channel: str, *, now: float) -> None:
        """Drop the stored publications; the top offset and epoch stay."""

    @abstractmethod
    def recover(
        self, channel: str, *, since: StreamPosition, limit: int, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        """Centrifugo's stream recovery: the publications after ``since.offset`` (at most ``limit``;
        0 or less → no limit), the current position, and whether they close the gap exactly.

        ``recovered`` is true iff the epoch matches (or ``since.epoch`` is empty) and either nothing was
        missed (no publications and top == since.offset) or the publications run from since.offset + 1
        to the top without loss and fit in ``limit``. When not recovered the publications that are there
        are still returned (none on an epoch mismatch, where offsets mean nothing); Centrifugo sends a
        client none in that case, so a caller following it drops them and reports the current position.
        """

    @abstractmethod
    def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        """Cache recovery mode: only the latest publication matters.

        If the client already has the current state (``since`` equals the top, offset > 0) nothing is
        sent and the result is recovered. Otherwise the latest stored publication is returned, recovered,
        when it is the top of the stream; when it is not (expired, removed, or later ones skipped
        history) nothing is returned and recovered is false.
        """

    @abstractmethod
    def sweep(self, now: float, *, budget: int = 0) -> int:
        """Drop whatever expired by ``now``: stream publications, metas, idempotency results. Returns the
        number of expirations processed. Reads and writes never depend on it (they check expiry
        themselves); it only bounds memory. ``budget`` > 0 caps the expirations handled in one call so
        that a mass expiry is spread over several calls instead of stalling the event loop once."""
