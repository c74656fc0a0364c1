"""The history engine interface: where a channel's publications get their place and are kept.

A channel's writer (``shards.writer.ChannelWriter``) is the only caller of ``publish`` for its channels on a
node, and the engine assigns offsets atomically, which is what makes offsets a single total order per
channel. Every method is a coroutine because an engine may live across the network (Redis); the memory
engine's never suspend, so with it a publish completes within the step that started it.

Every call receives ``now`` (seconds, the same clock for every call) so that the memory engine stays
clock-free and tests drive time by passing numbers; an engine that keeps time itself ignores it.
Semantics, and the value types, are in :mod:`broker.engine.base`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.publication import Publication


class HistoryEngine(ABC):
    """A channel → stream store. Publications handed to ``publish`` are kept by reference and returned by
    reads as they are: callers must treat them as immutable once published."""

    @abstractmethod
    async def publish(
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
    async def history(
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
    async def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        """The stream top, creating the meta (a fresh epoch) if none exists and refreshing its expiry."""

    @abstractmethod
    async def remove_history(self, channel: str, *, now: float) -> None:
        """Drop the stored publications; the top offset and epoch stay."""

    @abstractmethod
    async def recover(
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
    async def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        """Cache recovery mode: only the latest publication matters.

        If the client already has the current state (``since`` equals the top, offset > 0) nothing is
        sent and the result is recovered. Otherwise the latest stored publication is returned, recovered,
        when it is the top of the stream; when it is not (expired, removed, or later ones skipped
        history) nothing is returned and recovered is false.
        """

    def maintain(self, now: float) -> None:  # noqa: B027 (optional: most engines have no upkeep)
        """Periodic upkeep, called about once a second by the writer's ticker; never awaits.

        An engine that keeps time itself (Redis expiry) has nothing to do. The memory engine drops what
        expired, a bounded amount per call, so that a mass expiry is spread over several seconds."""
