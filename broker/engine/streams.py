"""The in-process streams of the memory history engine: sans-I/O, clock-free, synchronous.

:class:`broker.engine.memory.MemoryHistory` serves them through the async ``HistoryEngine`` interface.

Theory of operation
-------------------
Every channel with history has a ``_Stream``: the top offset, the epoch, a deque of the last
``history_size`` publications and two deadlines. ``expires_at`` is when the publications go (``history_ttl``
after the last publish); ``meta_expires_at`` is when the position itself goes (``history_meta_ttl`` after
the last publish or read), after which the channel starts over with a new epoch and offset 1. A stream whose
publications expired keeps answering with its top offset and epoch, which is what lets a client that was
away tell "nothing happened" from "I missed something" (recovery fails instead of silently succeeding).

Offsets are contiguous within an epoch and the deque only ever loses publications at its left end (trim)
or all at once (expiry, ``history_remove``), so the stored publications are exactly the offsets
``top - len + 1 .. top``: reading "since offset N" is index arithmetic, never a search. A deque is indexed
in blocks from either end, so a slice is read from whichever end is nearer; recovery and pagination read
near the top, which is the right end.

Correctness never depends on sweeping: every read and write looks at the deadlines of the stream it
touches and applies them first. ``sweep`` only returns memory. It pops a heap of ``(deadline, seq, stream)``
entries; to keep that heap at about one entry per stream rather than one per publish, a stream is pushed
only when it has no entry or its deadline moved earlier, and an entry that comes due for a stream whose
deadline has since moved later is simply re-pushed for the new deadline (``scheduled_at`` records which
entry is the live one; others are stale and skipped). Idempotency results have a heap of their own because
they exist for channels without history too.

Publications are stored by reference; the engine sets ``offset`` and ``epoch`` on the object it is given
and reads return those same objects, so callers treat published publications as immutable.
"""

from __future__ import annotations

import heapq
import itertools
import math
import secrets
import string
from collections import deque
from collections.abc import Callable
from itertools import islice

from broker import errors
from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.publication import Publication

_EPOCH_ALPHABET = string.ascii_letters + string.digits
_EPOCH_LENGTH = 8
_NEVER = math.inf


def new_epoch() -> str:
    """A random epoch. It must differ from any earlier epoch of the channel, or a client holding an old
    position would be told its offsets still mean something: 62**8 values make a collision negligible."""
    return "".join(secrets.choice(_EPOCH_ALPHABET) for _ in range(_EPOCH_LENGTH))


class _Stream:
    __slots__ = ("channel", "epoch", "expires_at", "meta_expires_at", "pubs", "scheduled_at", "top")

    def __init__(self, channel: str, epoch: str) -> None:
        self.channel = channel
        self.epoch = epoch
        self.top = 0
        self.pubs: deque[Publication] = deque()
        self.expires_at = _NEVER
        self.meta_expires_at = _NEVER
        # The deadline of this stream's live sweep-heap entry, None when it has none.
        self.scheduled_at: float | None = None

    def position(self) -> StreamPosition:
        return StreamPosition(self.top, self.epoch)

    def deadline(self) -> float:
        if self.pubs and self.expires_at < self.meta_expires_at:
            return self.expires_at
        return self.meta_expires_at

    def first_offset(self) -> int:
        return self.top - len(self.pubs) + 1


class _Result:
    __slots__ = ("expires_at", "result")

    def __init__(self, result: PublishResult, expires_at: float) -> None:
        self.result = result
        self.expires_at = expires_at


def _slice(pubs: deque[Publication], start: int, stop: int) -> list[Publication]:
    """``pubs[start:stop]`` for 0 <= start <= stop <= len, walking in from the nearer end."""
    n = len(pubs)
    if start >= stop:
        return []
    if start <= n - stop:
        return list(islice(pubs, start, stop))
    out = list(islice(reversed(pubs), n - stop, n - start))
    out.reverse()
    return out


class MemoryStreams:
    """Every method is the synchronous twin of ``broker.engine.history.HistoryEngine``'s (same
    arguments, results and errors); ``sweep`` drops what expired, at most ``budget`` entries a call."""

    def __init__(self, *, epoch_factory: Callable[[], str] = new_epoch) -> None:
        self._new_epoch = epoch_factory
        self._streams: dict[str, _Stream] = {}
        self._timers: list[tuple[float, int, _Stream]] = []
        self._results: dict[tuple[str, str], _Result] = {}
        self._result_timers: list[tuple[float, int, tuple[str, str], _Result]] = []
        self._seq = itertools.count()

    # -- introspection (tests, metrics) -------------------------------------------------------------

    @property
    def num_streams(self) -> int:
        """Streams held, expired-but-unswept ones included."""
        return len(self._streams)

    @property
    def num_idempotency_results(self) -> int:
        return len(self._results)

    # -- writes -------------------------------------------------------------------------------------

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
        key = (publication.channel, idempotency_key) if idempotency_key else None
        if key is not None:
            seen = self._results.get(key)
            if seen is not None and seen.expires_at > now:
                first = seen.result
                return PublishResult(first.offset, first.epoch, duplicate=True)

        if skip_history or history_size <= 0 or history_ttl <= 0:
            # Centrifugo publishes these as in a channel without history: no offset, and the stream (if
            # any) is untouched, so its publications are not kept alive by them either.
            publication.offset = 0
            publication.epoch = ""
            result = PublishResult(0, "")
        else:
            stream = self._live(publication.channel, now)
            if stream is None:
                stream = self._create(publication.channel)
            stream.top += 1
            publication.offset = stream.top
            publication.epoch = stream.epoch
            pubs = stream.pubs
            pubs.append(publication)
            while len(pubs) > history_size:
                pubs.popleft()
            stream.expires_at = now + history_ttl
            self._refresh_meta(stream, now, history_meta_ttl)
            result = PublishResult(stream.top, stream.epoch)

        if key is not None and idempotency_ttl > 0:
            entry = _Result(result, now + idempotency_ttl)
            self._results[key] = entry
            heapq.heappush(self._result_timers, (entry.expires_at, next(self._seq), key, entry))
        return result

    def remove_history(self, channel: str, *, now: float) -> None:
        stream = self._live(channel, now)
        if stream is not None:
            # The position stays: clients positioned on the stream must still see it continue.
            stream.pubs.clear()

    # -- reads --------------------------------------------------------------------------------------

    def position(self, channel: str, *, now: float, history_meta_ttl: float) -> StreamPosition:
        return self._touch(channel, now, history_meta_ttl).position()

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
        if since is not None and reverse and since.offset == 0:
            # Nothing lies before offset 0: Centrifugo rejects the request rather than answering empty.
            raise errors.BAD_REQUEST()
        stream = self._touch(channel, now, history_meta_ttl)
        position = stream.position()
        if since is not None and since.epoch and since.epoch != stream.epoch:
            raise errors.UNRECOVERABLE_POSITION()
        if limit == 0 or not stream.pubs:
            return HistoryResult([], position)
        if reverse:
            pubs = self._before(stream, None if since is None else since.offset, limit)
            pubs.reverse()
        else:
            pubs = self._after(stream, 0 if since is None else since.offset, limit)
        return HistoryResult(pubs, position)

    def recover(
        self, channel: str, *, since: StreamPosition, limit: int, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        stream = self._touch(channel, now, history_meta_ttl)
        position = stream.position()
        if since.epoch and since.epoch != stream.epoch:
            # Offsets of another epoch say nothing about this one: there is nothing to hand back.
            return RecoveryResult([], position, False)
        pubs = self._after(stream, since.offset, limit if limit > 0 else -1)
        if not pubs:
            recovered = stream.top == since.offset
        else:
            # The first must follow the client's offset (nothing trimmed or expired in between) and the
            # last must be the top (the limit did not cut the tail off).
            recovered = pubs[0].offset == since.offset + 1 and pubs[-1].offset == stream.top
        return RecoveryResult(pubs, position, recovered)

    def recover_cache(
        self, channel: str, *, since: StreamPosition, now: float, history_meta_ttl: float
    ) -> RecoveryResult:
        stream = self._touch(channel, now, history_meta_ttl)
        position = stream.position()
        up_to_date = since.offset > 0 and since.offset == stream.top and since.epoch == stream.epoch
        if not stream.pubs:
            return RecoveryResult([], position, up_to_date)
        latest = stream.pubs[-1]
        # If the latest stored publication is not the top, the state the client needs was never stored
        # (skip_history) or is gone: handing out an older one would present stale state as current.
        if latest.offset != stream.top:
            return RecoveryResult([], position, False)
        return RecoveryResult([] if up_to_date else [latest], position, True)

    # -- expiry -------------------------------------------------------------------------------------

    def sweep(self, now: float, *, budget: int = 0) -> int:
        dropped = 0
        cap = budget if budget > 0 else -1
        timers = self._timers
        while timers and timers[0][0] <= now and dropped != cap:
            when, _, stream = heapq.heappop(timers)
            if stream.scheduled_at != when or self._streams.get(stream.channel) is not stream:
                continue  # superseded by an earlier entry, or the stream is already gone
            stream.scheduled_at = None
            if stream.meta_expires_at <= now:
                del self._streams[stream.channel]
                dropped += 1
                continue
            if stream.pubs and stream.expires_at <= now:
                stream.pubs.clear()
                dropped += 1
            self._schedule(stream)
        result_timers = self._result_timers
        while result_timers and result_timers[0][0] <= now and dropped != cap:
            _, _, key, entry = heapq.heappop(result_timers)
            if self._results.get(key) is entry:
                del self._results[key]
                dropped += 1
        return dropped

    # -- internals ----------------------------------------------------------------------------------

    def _live(self, channel: str, now: float) -> _Stream | None:
        """The channel's stream with its deadlines applied as of ``now``; None if it has none."""
        stream = self._streams.get(channel)
        if stream is None:
            return None
        if stream.meta_expires_at <= now:
            del self._streams[channel]
            return None
        if stream.pubs and stream.expires_at <= now:
            stream.pubs.clear()
        return stream

    def _create(self, channel: str) -> _Stream:
        stream = _Stream(channel, self._new_epoch())
        self._streams[channel] = stream
        return stream

    def _touch(self, channel: str, now: float, history_meta_ttl: float) -> _Stream:
        """The live stream, created if needed, with its meta kept for another ``history_meta_ttl``.

        Creating on read is what gives a client positioned on a never-published channel an epoch that
        the first publish will keep, so that publish does not look like a lost stream to it."""
        stream = self._live(channel, now)
        if stream is None:
            stream = self._create(channel)
        self._refresh_meta(stream, now, history_meta_ttl)
        return stream

    def _refresh_meta(self, stream: _Stream, now: float, history_meta_ttl: float) -> None:
        meta = now + history_meta_ttl if history_meta_ttl > 0 else _NEVER
        # The position must outlive the publications: a stream holding publications with no meta would
        # hand out offsets of an epoch about to be replaced.
        if stream.pubs and meta < stream.expires_at:
            meta = stream.expires_at
        stream.meta_expires_at = meta
        self._schedule(stream)

    def _schedule(self, stream: _Stream) -> None:
        deadline = stream.deadline()
        if deadline == _NEVER:
            return  # an entry already queued re-reads the deadline when it comes due
        if stream.scheduled_at is None or deadline < stream.scheduled_at:
            stream.scheduled_at = deadline
            heapq.heappush(self._timers, (deadline, next(self._seq), stream))

    @staticmethod
    def _after(stream: _Stream, offset: int, limit: int) -> list[Publication]:
        """Stored publications with offset > ``offset``, oldest first, at most ``limit`` (< 0: all)."""
        pubs = stream.pubs
        n = len(pubs)
        start = max(0, offset + 1 - stream.first_offset())
        stop = n if limit < 0 else min(n, start + limit)
        return _slice(pubs, start, stop)

    @staticmethod
    def _before(stream: _Stream, offset: int | None, limit: int) -> list[Publication]:
        """Stored publications with offset < ``offset`` (None: all), oldest first, the newest ``limit``
        of them (< 0: all)."""
        pubs = stream.pubs
        n = len(pubs)
        stop = n if offset is None else min(n, offset - stream.first_offset())
        start = 0 if limit < 0 else max(0, stop - limit)
        return _slice(pubs, start, stop)
