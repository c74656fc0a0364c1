"""A shared-memory table of per-shard counts: string key → one uint32 count per column.

The router asks questions such as "which shards have subscribers of channel X?" or "is user Y online?" on
every request. Asking the shards costs a ZeroMQ round trip (~100 µs); reading shared memory costs well under
a microsecond. :class:`CountIndex` is that shared table. It is a **hint**: a shard stays the authority for
its own connections, and a reader may briefly see a count that is about to change or miss a key being
inserted right now.

Theory of operation
===================

Segment layout (one POSIX shared-memory segment, created once, attached by name)::

    header   16 * uint64   magic, capacity, columns, heap size, limits, counters (see ``_H_*``)
    hashes   capacity * uint64   0 = empty, 1 = tombstone, otherwise the key's 64-bit hash
    refs     capacity * uint64   where the key's UTF-8 text lives in the heap: offset << 16 | length
    values   capacity * columns * uint32
    heap     heap_bytes          key texts, bump-allocated, compacted in place when full

*Hashing.* A key's hash is ``crc32 << 32 | adler32`` of its UTF-8 bytes with bit 0 cleared; the home slot
comes from the crc32 half (adler32's low bits cluster on short keys). Collisions are resolved by linear
probing. Unlocked readers compare the 64-bit hash only: comparing the text would cost more than the whole
lookup. Everything under the lock compares texts, so two keys never share a row; when two live keys share a
full 64-bit hash, the second insert sets bit 0 on both and readers compare the text of flagged slots. The
one inexactness left is a hint's: a lookup of an *absent* key whose 64-bit hash equals a present key's reads
that key's counts (for keys of one family, such as ``chat:room-N``, adler32 carries maybe 15 bits, so expect
about one such pair per 2**47 key pairs).

*Single writer per column.* Column ``c`` is written by exactly one process (shard ``c``), so a count needs
no read-modify-write across processes: the writer stores the new absolute value. A uint32 store to an
aligned word is a single machine store, so readers never see a torn count.

*The lock* is ``flock`` on the segment's own file descriptor (each process opens the segment itself, so
each has its own open file description and the locks exclude each other; the kernel drops the lock of a
process that dies). It serializes everything that changes the *structure* of the table: inserts, deletes,
tombstone purges, heap compaction. It is also taken whenever a column's value crosses zero (0 → n or
n → 0). Updates n → m with n, m > 0 take no lock. That rule is what makes deletion safe: a row is
deleted (under the lock) only when every column reads zero, and a column can leave zero only under the
lock, so no writer can be storing into a row that is being deleted or reused. It also means that while a
writer's column of a row is nonzero the row stays in its slot, so each instance remembers, per column it
writes, key → slot, and an update is a dict lookup and one store: no hashing, no probing.

*Publication order.* An insert writes the key text, zeroes the row, stores the value, stores the ref, and
stores the hash word last; on x86-64 (TSO: stores become visible in program order) a reader that sees the
hash also sees the value and the text. Readers re-read the slot's hash after reading its values and retry
if the slot changed meanwhile (it was deleted and possibly reused by another key).

*Deletion.* When the last column of a row becomes zero the slot becomes a tombstone; if the next slot is
empty, the tombstone and the tombstones just before it become empty again (nothing probes past them).
Inserts reuse the first tombstone on their probe path. **Live keys never move**, which is what lets a
writer update its count without the lock. When live keys plus tombstones reach ``max_fill`` an insert
purges every tombstone that no live key's probe path crosses (exact, O(capacity), still without moving
keys); ``set`` returns False only when the live keys reach ``max_load`` or the heap is full of live text.

*Heap.* Key texts are bump-allocated; deleted keys leave garbage. When the heap runs out, the texts of live
keys are gathered and rewritten from offset 0 under the lock, with ``heap_epoch`` odd during the rewrite
(a seqlock): an unlocked reader of text (``items``, flagged lookups) that sees the epoch odd or changed
retries under the lock.

*Crashes.* A process that dies while holding the lock leaves ``dirty`` set. The next lock holder recounts
the counters, drops rows whose text no longer hashes to their hash word (an interrupted compaction), and
compacts. Dropped rows come back at their writer's next nonzero ``set`` (a repair also invalidates every
instance's remembered slots). A shard must call :meth:`CountIndex.reset_column` for its column when it
starts: the counts of a previous incarnation are stale, and a new instance does not know them (``set(k, c,
0)`` for a key this instance never counted is a no-op).

The module assumes x86-64's store ordering (what the router and shards run on); a weakly ordered CPU would
need fences that pure Python cannot emit. The segment is opened with ``_posixshmem`` (what
:mod:`multiprocessing.shared_memory` uses) rather than ``SharedMemory`` because Python 3.11's resource
tracker unlinks a segment when *any* process that attached it exits.
"""

from __future__ import annotations

import _posixshmem
import fcntl
import mmap
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from broker.ipc.segments import checked_header

__all__ = ["MAX_KEY_BYTES", "MAX_VALUE", "CountIndex", "key_hash"]

MAGIC = 0x5342_4958_4349_0001  # "SBIXCI" and the layout version
MAX_VALUE = 0xFFFF_FFFF
MAX_KEY_BYTES = 0xFFFF

_HEADER_WORDS = 16
(
    _H_MAGIC,
    _H_CAPACITY,
    _H_COLUMNS,
    _H_HEAP_BYTES,
    _H_MAX_LIVE,
    _H_MAX_FILL,
    _H_LIVE,  # live keys
    _H_TOMBS,  # tombstones
    _H_HEAP_USED,  # bump pointer
    _H_HEAP_LIVE,  # bytes of text of live keys
    _H_HEAP_EPOCH,  # odd while the heap is being compacted
    _H_DIRTY,  # 1 while a lock holder is changing the structure
    _H_REPAIRS,  # incremented by every repair
) = range(13)

_EMPTY = 0
_TOMBSTONE = 1
_FLAG = 1  # bit 0 of a live hash word: another live key has the same 64-bit hash
_NO_FLAG = ~_FLAG & 0xFFFF_FFFF_FFFF_FFFF
_MISS = -1
_UNSURE = -2  # a flagged text changed under an unlocked reader: ask again under the lock
_RETRIES = 3


def key_hash(data: bytes) -> int:
    """The 64-bit hash stored for a key's UTF-8 bytes (never 0 or 1, bit 0 clear)."""
    return (zlib.crc32(data) << 32 | zlib.adler32(data)) & _NO_FLAG or 2


def _encode(key: str) -> bytes:
    try:
        return key.encode()
    except UnicodeEncodeError:
        # Same encoding as broker.hashing, so that any str a client can send is a valid key.
        return key.encode("utf-8", "surrogatepass")


def _check_name(name: str) -> str:
    if not name or "/" in name or len(name) > 200:
        raise ValueError(f"invalid shared-memory name {name!r}: 1-200 characters, no '/'")
    return "/" + name


class CountIndex:
    """Fixed-capacity table: string key → one uint32 count per column (a column per shard).

    Create it once with :meth:`create` (the supervisor), attach from every other process with
    :meth:`attach`. Column ``c`` must be written by one process only. Not thread-safe: use one instance per
    thread. See the module docstring for the concurrency rules.
    """

    def __init__(self, name: str, fd: int, mm: mmap.mmap) -> None:
        """Wrap an opened segment; use :meth:`create` or :meth:`attach`."""
        self.name = name
        self._fd = fd
        self._mm = mm
        buf, header = checked_header(mm, _HEADER_WORDS, MAGIC, name, "a CountIndex")
        self.capacity = capacity = header[_H_CAPACITY]
        self.columns = columns = header[_H_COLUMNS]
        self.heap_bytes = header[_H_HEAP_BYTES]
        self._mask = capacity - 1
        start = _HEADER_WORDS * 8
        ends = [start + 8 * capacity, start + 16 * capacity, start + 16 * capacity + 4 * capacity * columns]
        ends[2] = (ends[2] + 7) & ~7
        self._header = header
        self._hashes = buf[start : ends[0]].cast("Q")
        self._refs = buf[ends[0] : ends[1]].cast("Q")
        self._values = buf[ends[1] : ends[1] + 4 * capacity * columns].cast("I")
        self._heap = buf[ends[2] : ends[2] + self.heap_bytes]
        self._buf = buf
        self._zero_row = memoryview(bytes(4 * columns)).cast("I")
        self._locked = False
        # Per column this instance writes: key -> slot of the rows where that column is nonzero. Such a
        # row can be neither deleted nor moved, so updates skip hashing and probing.
        self._mine: list[dict[str, int]] = [{} for _ in range(columns)]
        self._repairs = header[_H_REPAIRS]

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def segment_size(capacity: int, columns: int, heap_bytes: int) -> int:
        """Bytes of shared memory a table of these dimensions needs."""
        values = (4 * capacity * columns + 7) & ~7
        return _HEADER_WORDS * 8 + 16 * capacity + values + heap_bytes

    @classmethod
    def create(
        cls,
        name: str,
        *,
        capacity: int,
        columns: int,
        heap_bytes: int | None = None,
        max_load: float = 0.5,
        max_fill: float = 0.75,
        replace: bool = False,
    ) -> CountIndex:
        """Create segment ``name`` (no leading '/'), e.g. derived from the runtime directory.

        ``capacity`` is rounded up to a power of two. At most ``max_load * capacity`` live keys fit;
        tombstones are purged when live keys plus tombstones reach ``max_fill * capacity``. ``heap_bytes``
        (key texts) defaults to 24 bytes per slot. ``replace`` unlinks a segment of the same name left by a
        previous run; otherwise an existing segment raises FileExistsError.
        """
        if columns < 1 or capacity < 2:
            raise ValueError("need columns >= 1 and capacity >= 2")
        if not 0 < max_load <= max_fill < 1:
            raise ValueError("need 0 < max_load <= max_fill < 1")
        capacity = 1 << (capacity - 1).bit_length()
        heap_bytes = 24 * capacity if heap_bytes is None else heap_bytes
        if heap_bytes < 1:
            raise ValueError("heap_bytes must be positive")
        shm_name = _check_name(name)
        if replace:
            cls.remove(name)
        size = cls.segment_size(capacity, columns, heap_bytes)
        fd = _posixshmem.shm_open(shm_name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)  # a new segment reads as zeros: all slots empty
            mm = mmap.mmap(fd, size)
            header = memoryview(mm)[: _HEADER_WORDS * 8].cast("Q")
            header[_H_CAPACITY] = capacity
            header[_H_COLUMNS] = columns
            header[_H_HEAP_BYTES] = heap_bytes
            header[_H_MAX_LIVE] = max(1, min(capacity - 1, int(capacity * max_load)))
            header[_H_MAX_FILL] = max(header[_H_MAX_LIVE], min(capacity - 1, int(capacity * max_fill)))
            header[_H_MAGIC] = MAGIC  # last: an attacher never sees a half-initialized header as valid
            header.release()
            return cls(name, fd, mm)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink(shm_name)
            raise

    @classmethod
    def attach(cls, name: str) -> CountIndex:
        """Attach to an existing segment; dimensions come from its header. FileNotFoundError if absent."""
        fd = _posixshmem.shm_open(_check_name(name), os.O_RDWR, mode=0o600)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
            return cls(name, fd, mm)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Detach this process (the segment stays for the others). Idempotent."""
        if self._fd < 0:
            return
        for view in (self._header, self._hashes, self._refs, self._values, self._heap, self._buf):
            view.release()
        self._mm.close()
        os.close(self._fd)  # also drops this process's lock, if held
        self._fd = -1

    def unlink(self) -> None:
        """Remove the segment name (processes still attached keep their mapping). Idempotent."""
        self.remove(self.name)

    @staticmethod
    def remove(name: str) -> bool:
        """Unlink segment ``name`` if it exists (e.g. at boot, after a crash); True if it did."""
        try:
            _posixshmem.shm_unlink(_check_name(name))
        except FileNotFoundError:
            return False
        return True

    def __enter__(self) -> CountIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads (no lock)

    def get(self, key: str, column: int) -> int:
        """Column ``column`` of ``key``; 0 if the key is absent."""
        if not 0 <= column < self.columns:
            raise IndexError(f"column {column} out of range(0, {self.columns})")
        data = _encode(key)
        h = (zlib.crc32(data) << 32 | zlib.adler32(data)) & _NO_FLAG or 2
        hashes = self._hashes
        i = (h >> 32) & self._mask
        if hashes[i] != h:
            i = self._probe(data, h, i)
            if i < 0:
                return 0 if i == _MISS else self._row_locked(data, h)[column]
        value: int = self._values[i * self.columns + column]
        if hashes[i] | _FLAG != h | _FLAG:  # the slot was deleted meanwhile: read again
            return self._row_slow(data, h)[column]
        return value

    def row(self, key: str) -> list[int]:
        """Every column of ``key`` (e.g. per-shard subscriber counts); all zeros if absent."""
        data = _encode(key)
        h = (zlib.crc32(data) << 32 | zlib.adler32(data)) & _NO_FLAG or 2
        hashes = self._hashes
        i = (h >> 32) & self._mask
        if hashes[i] != h:
            i = self._probe(data, h, i)
            if i < 0:
                return [0] * self.columns if i == _MISS else self._row_locked(data, h)
        base = i * self.columns
        values: list[int] = self._values[base : base + self.columns].tolist()
        if hashes[i] | _FLAG != h | _FLAG:
            return self._row_slow(data, h)
        return values

    def total(self, key: str) -> int:
        """Sum over the columns of ``key`` (e.g. subscribers on all shards)."""
        return sum(self.row(key))

    def nonzero_columns(self, key: str) -> list[int]:
        """Columns where ``key`` is nonzero (e.g. the shards that have subscribers)."""
        return [c for c, v in enumerate(self.row(key)) if v]

    def __contains__(self, key: str) -> bool:
        return any(self.row(key))

    def items(self) -> Iterator[tuple[str, list[int]]]:
        """Every key with a nonzero column and its row, in slot order.

        Not a snapshot: a key inserted or deleted during the walk may or may not appear, but each yielded
        row belongs to its key and its text is never torn.
        """
        header, hashes, refs, values, heap = self._header, self._hashes, self._refs, self._values, self._heap
        columns = self.columns
        for i, w in enumerate(hashes.tolist()):
            if w <= _TOMBSTONE:
                continue
            for _ in range(_RETRIES):
                epoch = header[_H_HEAP_EPOCH]
                ref = refs[i]
                text = bytes(heap[ref >> 16 : (ref >> 16) + (ref & 0xFFFF)])
                row: list[int] = values[i * columns : (i + 1) * columns].tolist()
                if hashes[i] | _FLAG != w | _FLAG:
                    break  # deleted (or reused) meanwhile: the key is gone from this slot
                if epoch & 1 == 0 and header[_H_HEAP_EPOCH] == epoch:
                    if any(row):
                        yield text.decode("utf-8", "surrogatepass"), row
                    break
            else:
                entry = self._slot_locked(i, w)
                if entry is not None:
                    yield entry

    def __len__(self) -> int:
        """Live keys (a hint, like everything else here)."""
        return int(self._header[_H_LIVE])

    def stats(self) -> dict[str, int]:
        """Counters for monitoring and tests."""
        h = self._header
        return {
            "capacity": self.capacity,
            "columns": self.columns,
            "live": h[_H_LIVE],
            "tombstones": h[_H_TOMBS],
            "max_live": h[_H_MAX_LIVE],
            "max_fill": h[_H_MAX_FILL],
            "heap_bytes": self.heap_bytes,
            "heap_used": h[_H_HEAP_USED],
            "heap_live": h[_H_HEAP_LIVE],
            "heap_epoch": h[_H_HEAP_EPOCH],
        }

    # ------------------------------------------------------------------ writes

    def set(self, key: str, column: int, value: int) -> bool:
        """Store ``value`` as ``key``'s count in ``column``; only that column's writer may call this.

        n -> m with n, m > 0 is a plain store into a slot this instance remembers from the insert (no
        hashing, no lock); crossing zero, inserting and deleting take the lock. Setting the last nonzero
        column to 0 deletes the key. Returns False when a new key does not fit (live keys at ``max_load``
        or the heap full of live text): the count is then not recorded.
        """
        if not 0 <= column < self.columns:
            raise IndexError(f"column {column} out of range(0, {self.columns})")
        if not 0 <= value <= MAX_VALUE:
            raise ValueError(f"value {value} out of uint32 range")
        slot = self._mine[column].get(key)
        if slot is not None:
            if value and self._header[_H_REPAIRS] == self._repairs:
                # Our column of this row is nonzero, so nobody deletes or moves the row meanwhile.
                self._values[slot * self.columns + column] = value
                return True
        elif not value:
            return True  # a key we never counted: our column is already zero
        data = _encode(key)
        if len(data) > MAX_KEY_BYTES:
            raise ValueError(f"key longer than {MAX_KEY_BYTES} bytes")
        with self._lock():
            return self._set_locked(key, data, key_hash(data), column, value)

    def reset_column(self, column: int) -> None:
        """Zero ``column`` everywhere (a restarted shard: its predecessor's counts are stale)."""
        if not 0 <= column < self.columns:
            raise IndexError(f"column {column} out of range(0, {self.columns})")
        columns, values, hashes = self.columns, self._values, self._hashes
        with self._lock():
            self._mine[column].clear()
            for i, w in enumerate(hashes.tolist()):
                if w > _TOMBSTONE and values[i * columns + column]:
                    values[i * columns + column] = 0
                    if not any(values[i * columns : (i + 1) * columns]):
                        self._delete(i)

    # ------------------------------------------------------------------ internals

    def _probe(self, data: bytes, h: int, i: int) -> int:
        """Continue an unlocked lookup whose home slot ``i`` did not hold ``h``: slot, _MISS or _UNSURE.

        Only flagged slots are compared by text: an unflagged match is trusted (see "Hashing").
        """
        hashes, mask = self._hashes, self._mask
        flagged = h | _FLAG
        for _ in range(self.capacity):
            w = hashes[i]
            if w == h:
                return i
            if w == _EMPTY:
                return _MISS
            if w == flagged:
                same = self._text_equals(i, data)
                if same is None:
                    return _UNSURE
                if same:
                    return i
            i = (i + 1) & mask
        return _MISS

    def _text_equals(self, i: int, data: bytes) -> bool | None:
        """Whether slot ``i`` holds ``data``; None if a compaction interfered (unlocked readers)."""
        header = self._header
        epoch = header[_H_HEAP_EPOCH]
        ref = self._refs[i]
        same = (ref & 0xFFFF) == len(data) and self._heap[ref >> 16 : (ref >> 16) + len(data)] == data
        if epoch & 1 or header[_H_HEAP_EPOCH] != epoch:
            return None
        return same

    def _row_slow(self, data: bytes, h: int) -> list[int]:
        """A read whose slot changed under it: retry a few times, then read under the lock."""
        for _ in range(_RETRIES):
            i = (h >> 32) & self._mask
            i = i if self._hashes[i] == h else self._probe(data, h, i)
            if i == _MISS:
                return [0] * self.columns
            if i >= 0:
                row: list[int] = self._values[i * self.columns : (i + 1) * self.columns].tolist()
                if self._hashes[i] | _FLAG == h | _FLAG:
                    return row
        return self._row_locked(data, h)

    def _row_locked(self, data: bytes, h: int) -> list[int]:
        with self._lock():
            i = self._walk(data, h)[0]
            if i < 0:
                return [0] * self.columns
            return self._values[i * self.columns : (i + 1) * self.columns].tolist()

    def _slot_locked(self, i: int, w: int) -> tuple[str, list[int]] | None:
        with self._lock():
            now = self._hashes[i]
            if now <= _TOMBSTONE or now | _FLAG != w | _FLAG:
                return None
            ref = self._refs[i]
            text = bytes(self._heap[ref >> 16 : (ref >> 16) + (ref & 0xFFFF)])
            row: list[int] = self._values[i * self.columns : (i + 1) * self.columns].tolist()
            return (text.decode("utf-8", "surrogatepass"), row) if any(row) else None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        if self._locked:
            raise RuntimeError("CountIndex lock is not reentrant")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._locked = True
        header = self._header
        try:
            if header[_H_DIRTY]:
                self._repair()  # the previous holder died in the middle of a change
            if header[_H_REPAIRS] != self._repairs:
                # A repair may have dropped rows: remembered slots are no longer trustworthy.
                for mine in self._mine:
                    mine.clear()
                self._repairs = header[_H_REPAIRS]
            header[_H_DIRTY] = 1
            yield
            header[_H_DIRTY] = 0
        finally:
            self._locked = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _walk(self, data: bytes, h: int) -> tuple[int, int, list[int]]:
        """Under the lock: (slot of the key or -1, first reusable slot or -1, live twins).

        Every hash match is compared by text here, so a key never lands in another key's row, and
        twins (same 64-bit hash, different text) are collected for flagging.
        """
        hashes, refs, heap, mask = self._hashes, self._refs, self._heap, self._mask
        i = (h >> 32) & mask
        free = -1
        twins: list[int] = []
        for _ in range(self.capacity):
            w = hashes[i]
            if w == _EMPTY:
                return -1, i if free < 0 else free, twins
            if w == _TOMBSTONE:
                if free < 0:
                    free = i
            elif w | _FLAG == h | _FLAG:
                ref = refs[i]
                if ref & 0xFFFF == len(data) and heap[ref >> 16 : (ref >> 16) + len(data)] == data:
                    return i, free, twins
                twins.append(i)
            i = (i + 1) & mask
        return -1, free, twins

    def _set_locked(self, key: str, data: bytes, h: int, column: int, value: int) -> bool:
        columns, values, mine = self.columns, self._values, self._mine[column]
        slot, free, twins = self._walk(data, h)
        if slot >= 0:
            values[slot * columns + column] = value
            if value:
                mine[key] = slot
                return True
            mine.pop(key, None)
            if not any(values[slot * columns : (slot + 1) * columns]):
                self._delete(slot)
            return True
        mine.pop(key, None)
        if not value:
            return True
        slot = self._insert(data, h, column, value, free, twins)
        if slot < 0:
            return False
        mine[key] = slot
        return True

    def _insert(self, data: bytes, h: int, column: int, value: int, free: int, twins: list[int]) -> int:
        header, hashes = self._header, self._hashes
        if header[_H_LIVE] >= header[_H_MAX_LIVE]:
            return -1
        if self._needs_purge(free):
            if not header[_H_TOMBS]:
                return -1
            self._purge_tombstones()
            free, twins = self._walk(data, h)[1:]
            if self._needs_purge(free):
                return -1
        offset = self._allocate(len(data))
        if offset < 0:
            return -1
        columns, values = self.columns, self._values
        self._heap[offset : offset + len(data)] = data
        values[free * columns : (free + 1) * columns] = self._zero_row
        values[free * columns + column] = value
        self._refs[free] = offset << 16 | len(data)
        for t in twins:
            hashes[t] = hashes[t] | _FLAG  # before our key appears, so a reader of the twin compares text
        reused = hashes[free] == _TOMBSTONE
        hashes[free] = h | _FLAG if twins else h  # last: publishes the row
        header[_H_LIVE] += 1
        header[_H_HEAP_LIVE] += len(data)
        if reused:
            header[_H_TOMBS] -= 1
        return free

    def _needs_purge(self, free: int) -> bool:
        """No reusable slot, or taking an empty one would pass ``max_fill``."""
        header = self._header
        if free < 0:
            return True
        return self._hashes[free] == _EMPTY and header[_H_LIVE] + header[_H_TOMBS] >= header[_H_MAX_FILL]

    def _delete(self, i: int) -> None:
        header, hashes, mask = self._header, self._hashes, self._mask
        hashes[i] = _TOMBSTONE
        header[_H_LIVE] -= 1
        header[_H_HEAP_LIVE] -= self._refs[i] & 0xFFFF
        header[_H_TOMBS] += 1
        # A tombstone followed by an empty slot ends every probe path through it: it and the tombstones
        # right before it can be empty again.
        if hashes[(i + 1) & mask] == _EMPTY:
            for _ in range(self.capacity):
                if hashes[i] != _TOMBSTONE:
                    break
                hashes[i] = _EMPTY
                header[_H_TOMBS] -= 1
                i = (i - 1) & mask

    def _purge_tombstones(self) -> None:
        """Empty every tombstone that no live key's probe path crosses, without moving any key.

        Walking backwards from an empty slot, ``reach`` is the smallest (unrolled) home position of the
        live keys seen so far; a tombstone at position p lies on some key's path iff reach <= p.
        """
        hashes, mask, capacity = self._hashes, self._mask, self.capacity
        words = hashes.tolist()
        try:
            start = words.index(_EMPTY)
        except ValueError:
            return  # no empty slot at all: every tombstone may be on a path (only after a bad repair)
        reach = start + capacity + 1
        tombs = 0
        for p in range(start + capacity - 1, start, -1):
            w = words[p & mask]
            if w == _TOMBSTONE:
                if reach <= p:
                    tombs += 1
                else:
                    hashes[p & mask] = _EMPTY
            elif w != _EMPTY:
                reach = min(reach, p - ((p - (w >> 32)) & mask))
        self._header[_H_TOMBS] = tombs

    def _allocate(self, size: int) -> int:
        header = self._header
        limit = self.heap_bytes
        if header[_H_HEAP_LIVE] + size > limit - limit // 8:
            return -1  # keep 1/8 free so that compactions stay rare
        if header[_H_HEAP_USED] + size > limit:
            self._compact_heap()
        offset: int = header[_H_HEAP_USED]
        header[_H_HEAP_USED] = offset + size
        return offset

    def _compact_heap(self) -> None:
        """Rewrite the texts of live keys from offset 0 (under the lock, epoch odd meanwhile)."""
        header, hashes, refs, heap = self._header, self._hashes, self._refs, self._heap
        texts = []
        for i, w in enumerate(hashes.tolist()):
            if w > _TOMBSTONE:
                ref = refs[i]
                texts.append((i, bytes(heap[ref >> 16 : (ref >> 16) + (ref & 0xFFFF)])))
        header[_H_HEAP_EPOCH] = header[_H_HEAP_EPOCH] | 1
        offset = 0
        for i, text in texts:
            heap[offset : offset + len(text)] = text
            refs[i] = offset << 16 | len(text)
            offset += len(text)
        header[_H_HEAP_USED] = offset
        header[_H_HEAP_LIVE] = offset
        header[_H_HEAP_EPOCH] = header[_H_HEAP_EPOCH] + 1

    def _repair(self) -> None:
        """Restore the invariants after a lock holder died mid-change (we hold the lock)."""
        header, hashes, refs, heap = self._header, self._hashes, self._refs, self._heap
        for i, w in enumerate(hashes.tolist()):
            if w > _TOMBSTONE:
                ref = refs[i]
                end = (ref >> 16) + (ref & 0xFFFF)
                text = bytes(heap[ref >> 16 : end]) if end <= self.heap_bytes else b""
                if key_hash(text) != w & _NO_FLAG:
                    hashes[i] = _TOMBSTONE  # text lost in an interrupted compaction: drop the row
        words = hashes.tolist()
        header[_H_LIVE] = sum(1 for w in words if w > _TOMBSTONE)
        header[_H_TOMBS] = words.count(_TOMBSTONE)
        self._compact_heap()  # also recounts the heap text and leaves the epoch even
        self._purge_tombstones()
        header[_H_REPAIRS] += 1
