"""A shard's connections by user in shared memory, so that the router answers ``connections`` by user
without asking the shard.

Each shard writes one segment (single writer); the router reads every shard's. For every user with a
connection on the shard the segment holds that user's part of the ``connections`` answer, already
encoded: ``"<client>":{ConnectionInfo},…`` — the bytes the shard itself would put between
``{"connections":{`` and ``}}``. The router splices them; nothing is decoded on the way.

Theory of operation
===================

Layout (one POSIX shared-memory segment per shard, created by the shard at start)::

    header  8 * uint64          magic, capacity, heap size, epoch, heartbeat, pid, complete, live
    hashes  capacity * uint64   0 = empty, 1 = tombstone, else the user's 64-bit hash (never 0 or 1)
    refs    capacity * uint64   offset << 32 | length of the user's blob in the heap
    heap    heap_bytes          blobs: uint32 key length, the user id, the fragment

*One writer.* Only the shard writes its segment, so nothing is locked. A user's new fragment is appended
to the heap and its ref swapped in one aligned 8-byte store; the old blob stays untouched until the next
compaction. A new user's slot gets its ref before its hash word. On x86-64 (stores become visible in
program order; what the router and shards run on, as for :mod:`broker.ipc.shm_index`) a reader that sees
a hash sees its ref, and a ref always points at a whole blob.

*Compaction* (heap full, or too many tombstones) rewrites the table and the heap from the writer's own
copy of the live entries, with ``epoch`` odd meanwhile (a seqlock): a reader takes the epoch before and
after its lookup and discards what it read if the two differ or are odd.

*Readers check the key.* A blob starts with its user id, so a slot reused by another user between
reading the hash and the ref is noticed (the ids differ) and the lookup is retried.

*What a reader may not trust* is answered with None: "ask the shard". That is the case while the segment
is not ``complete`` (the table or heap could not hold every user: the writer keeps going and says so),
when its heartbeat is older than :data:`STALE_AFTER` (the shard is gone or stuck), or after a few
retries that kept racing with the writer. A restarted shard first zeroes the heartbeat of the segment
its previous incarnation left, then writes a new one under the same name: a reader still attached to
the old one sees it stale at once and attaches to the new one.
"""

from __future__ import annotations

import mmap
import os
import time
import zlib

from broker.ipc.segments import checked_header, open_segment, remove_segment

__all__ = ["STALE_AFTER", "UserIndexReader", "UserIndexWriter", "home_slot", "remove_segment", "user_hash"]

MAGIC = 0x5342_5553_4552_0002  # "SBUSER" and the layout version (2: home slot from the crc32 half)
STALE_AFTER = 3.0  # seconds without a heartbeat after which a segment is not read
_HEADER_WORDS = 8
_H_MAGIC, _H_CAPACITY, _H_HEAP, _H_EPOCH, _H_BEAT, _H_PID, _H_COMPLETE, _H_LIVE = range(8)
_EMPTY = 0
_TOMBSTONE = 1
_MAX_LOAD = 0.5  # live users per slot
_MAX_FILL = 0.75  # live users and tombstones per slot, before the table is rebuilt
_RETRIES = 4
# The heap is rewritten when what was written since the last rewrite would take it past this many
# times the live bytes (plus :data:`_SLACK`): shared-memory pages, once touched, stay resident, so the
# pages in use stay near 1.5 times the live fragments however large the segment is.
_GROWTH = 1.5
_SLACK = 64 * 1024


def user_hash(key: bytes) -> int:
    """The 64-bit hash stored for a user id's UTF-8 bytes (never 0 or 1)."""
    value = zlib.crc32(key) << 32 | zlib.adler32(key)
    return value if value > _TOMBSTONE else 2


def home_slot(hashed: int, mask: int) -> int:
    """Where a user's probe starts: from the crc32 half. The adler32 half's low bits cluster on short
    ids (``u1`` … ``u99999`` fall on 73 of 131,072 slots), and linear probing then costs quadratic time."""
    return (hashed >> 32) & mask


def _encode(user: str) -> bytes:
    return user.encode("utf-8", "surrogatepass")  # any str a client can send is a valid user id


def _retire(name: str) -> None:
    """Mark the segment a previous incarnation left as not to be read: a reader still attached to it
    (the router) then attaches to the new one at once instead of reading stale users until the old
    heartbeat ages out."""
    try:
        fd, mm = open_segment(name, os.O_RDWR)
    except (FileNotFoundError, ValueError):
        return
    try:
        if len(mm) >= _HEADER_WORDS * 8:
            header = memoryview(mm)[: _HEADER_WORDS * 8].cast("Q")
            if header[_H_MAGIC] == MAGIC:
                header[_H_COMPLETE] = 0
                header[_H_BEAT] = 0
            header.release()
    finally:
        mm.close()
        os.close(fd)


class _Segment:
    def __init__(self, name: str, fd: int, mm: mmap.mmap) -> None:
        self.name = name
        self._fd = fd
        self._mm = mm
        buf, header = checked_header(mm, _HEADER_WORDS, MAGIC, name, "a user index")
        self.capacity = capacity = header[_H_CAPACITY]
        self.heap_bytes = header[_H_HEAP]
        self._mask = capacity - 1
        start = _HEADER_WORDS * 8
        self._header = header
        self._hashes = buf[start : start + 8 * capacity].cast("Q")
        self._refs = buf[start + 8 * capacity : start + 16 * capacity].cast("Q")
        self._heap = buf[start + 16 * capacity : start + 16 * capacity + self.heap_bytes]
        self._buf = buf

    def close(self) -> None:
        for view in (self._header, self._hashes, self._refs, self._heap, self._buf):
            view.release()
        self._mm.close()
        os.close(self._fd)


class UserIndexWriter(_Segment):
    """The shard's side: :meth:`put` a user's fragment (empty: the user has no connection left)."""

    @classmethod
    def create(cls, name: str, *, capacity: int, heap_bytes: int) -> UserIndexWriter:
        """A fresh segment ``name``, replacing one a previous run (or incarnation) left."""
        capacity = 1 << max(4, (capacity - 1).bit_length())
        size = _HEADER_WORDS * 8 + 16 * capacity + heap_bytes
        _retire(name)
        remove_segment(name)
        fd, mm = open_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, size)
        header = memoryview(mm)[: _HEADER_WORDS * 8].cast("Q")
        header[_H_CAPACITY] = capacity
        header[_H_HEAP] = heap_bytes
        header[_H_PID] = os.getpid()
        header[_H_COMPLETE] = 1
        header[_H_BEAT] = time.time_ns()
        header[_H_MAGIC] = MAGIC
        header.release()
        return cls(name, fd, mm)

    def __init__(self, name: str, fd: int, mm: mmap.mmap) -> None:
        super().__init__(name, fd, mm)
        self._slots: dict[str, int] = {}  # users in the table → their slot
        # Users whose blob is not in the table (it did not fit): readers are told to ask the shard
        # (``complete`` is 0) until a rebuild fits everyone again.
        self._homeless: dict[str, bytes] = {}
        self._used = 0  # heap bump pointer
        self._live = 0  # bytes of the blobs in the table
        # Slots holding a tombstone: a rebuild clears them and the live ones only, so that the table's
        # pages a small shard never used are never touched (resident) either.
        self._tombstones: set[int] = set()
        self.compactions = 0
        self.probes = 0  # slots passed over by inserts: stays near the number of users
        self.touched = 0  # the furthest the heap was ever written: its resident pages

    # -- writing ---------------------------------------------------------------------------------

    def put(self, user: str, fragment: bytes) -> None:
        """``user``'s connections are now ``fragment``; ``b""`` removes the user."""
        if not fragment:
            self._remove(user)
            return
        key = _encode(user)
        blob = len(key).to_bytes(4, "little") + key + fragment
        slot = self._slots.get(user)
        if self._homeless or (slot is None and len(self._slots) + 1 > _MAX_LOAD * self.capacity):
            self._leave_out(user, blob)
            return
        live = self._live + len(blob) - (self._refs[slot] & 0xFFFF_FFFF if slot is not None else 0)
        if self._used + len(blob) > min(self.heap_bytes, _GROWTH * live + _SLACK):
            self._compact()
            if self._used + len(blob) > self.heap_bytes:
                self._rebuild({user: blob})  # live blobs fill the heap: some are left out
                return
        self._live = live
        ref = self._append(blob)
        if slot is not None:
            self._refs[slot] = ref  # one aligned store: readers see the old blob or the new one
        elif len(self._slots) + len(self._tombstones) + 1 > _MAX_FILL * self.capacity:
            self._rebuild({user: blob})
        else:
            self._insert(user, key, ref)

    def _remove(self, user: str) -> None:
        self._homeless.pop(user, None)
        slot = self._slots.pop(user, None)
        if slot is None:
            return
        self._live -= self._refs[slot] & 0xFFFF_FFFF
        self._hashes[slot] = _TOMBSTONE
        self._tombstones.add(slot)
        self._header[_H_LIVE] = len(self._slots)

    def _leave_out(self, user: str, blob: bytes) -> None:
        """Not in the table (it is full): kept aside, and the segment marked incomplete."""
        slot = self._slots.pop(user, None)
        if slot is not None:
            self._live -= self._refs[slot] & 0xFFFF_FFFF
            self._hashes[slot] = _TOMBSTONE
            self._tombstones.add(slot)
        self._homeless[user] = blob
        self._header[_H_COMPLETE] = 0

    def _append(self, blob: bytes) -> int:
        offset = self._used
        self._heap[offset : offset + len(blob)] = blob
        self._used = offset + len(blob)
        self.touched = max(self.touched, self._used)
        return offset << 32 | len(blob)

    def _insert(self, user: str, key: bytes, ref: int) -> None:
        hashed = user_hash(key)
        slot = home_slot(hashed, self._mask)
        hashes = self._hashes
        while hashes[slot] > _TOMBSTONE:
            slot = (slot + 1) & self._mask
            self.probes += 1
        if hashes[slot] == _TOMBSTONE:
            self._tombstones.discard(slot)
        self._refs[slot] = ref
        hashes[slot] = hashed  # last: a reader that sees the hash sees the ref
        self._slots[user] = slot
        self._header[_H_LIVE] = len(self._slots)

    def _compact(self) -> None:
        """Slide the live blobs to the start of the heap, in heap order, and point their slots at the
        new places; readers are kept out by an odd epoch. The table is left as it is: no user is
        hashed or inserted again, so this costs a copy per live blob (a rewrite of ping latencies
        brings one about every ``1 / (_GROWTH - 1)`` rewrites of every user)."""
        refs, heap, header = self._refs, self._heap, self._header
        order = sorted(self._slots.values(), key=lambda slot: refs[slot])  # by offset: the high half
        header[_H_EPOCH] += 1
        self.compactions += 1
        used = 0
        for slot in order:
            ref = refs[slot]
            offset, length = ref >> 32, ref & 0xFFFF_FFFF
            if offset != used:  # moving towards the start: never over a blob not yet moved
                heap[used : used + length] = bytes(heap[offset : offset + length])
                refs[slot] = used << 32 | length
            used += length
        self._used = self._live = used
        header[_H_EPOCH] += 1

    def _live_blobs(self) -> dict[str, bytes]:
        heap, refs = self._heap, self._refs
        live = {}
        for user, slot in self._slots.items():
            ref = refs[slot]
            offset = ref >> 32
            live[user] = bytes(heap[offset : offset + (ref & 0xFFFF_FFFF)])
        return live

    def _rebuild(self, changed: dict[str, bytes] | None = None) -> None:
        """Rewrite table and heap from the live blobs (and ``changed``), readers kept out by an odd
        epoch; what does not fit is left out and the segment marked incomplete."""
        live = self._live_blobs()
        live.update(self._homeless)
        live.update(changed or {})
        header = self._header
        header[_H_EPOCH] += 1
        self.compactions += 1
        hashes = self._hashes
        for slot in (*self._slots.values(), *self._tombstones):
            hashes[slot] = _EMPTY
        self._slots.clear()
        self._homeless = {}
        self._tombstones = set()
        self._used = 0
        for user, blob in live.items():
            fits = self._used + len(blob) <= self.heap_bytes
            if fits and len(self._slots) + 1 <= _MAX_LOAD * self.capacity:
                self._insert(user, _encode(user), self._append(blob))
            else:
                self._homeless[user] = blob
        self._live = self._used
        header[_H_COMPLETE] = 0 if self._homeless else 1
        header[_H_LIVE] = len(self._slots)
        header[_H_EPOCH] += 1

    def retry_if_incomplete(self) -> None:
        """Called now and then (the shard's tick): once users left, everyone may fit again."""
        if not self._header[_H_COMPLETE]:
            self._rebuild()

    def beat(self) -> None:
        self._header[_H_BEAT] = time.time_ns()

    @property
    def complete(self) -> bool:
        return bool(self._header[_H_COMPLETE])

    def remove_segment(self) -> None:
        self.close()
        remove_segment(self.name)


class UserIndexReader(_Segment):
    """The router's side: :meth:`get` a user's fragment, or None when the shard must be asked."""

    @classmethod
    def attach(cls, name: str) -> UserIndexReader | None:
        try:
            fd, mm = open_segment(name, os.O_RDWR)
        except (FileNotFoundError, ValueError):
            return None
        try:
            return cls(name, fd, mm)
        except ValueError:
            mm.close()
            os.close(fd)
            return None

    def fresh(self, now_ns: int) -> bool:
        return now_ns - self._header[_H_BEAT] < STALE_AFTER * 1e9

    def get(self, user: str) -> bytes | None:
        """The user's fragment (``b""``: no connection), or None: ask the shard."""
        key = _encode(user)
        hashed = user_hash(key)
        header = self._header
        hashes = self._hashes
        refs = self._refs
        heap = self._heap
        mask = self._mask
        for _ in range(_RETRIES):
            epoch = header[_H_EPOCH]
            if epoch & 1 or not header[_H_COMPLETE]:
                return None  # a rebuild (a few ms) or users left out: the shard answers
            found: bytes | None = b""
            slot = home_slot(hashed, mask)
            for _probe in range(self.capacity):
                word = hashes[slot]
                if word == _EMPTY:
                    break
                if word == hashed:
                    ref = refs[slot]
                    offset, length = ref >> 32, ref & 0xFFFF_FFFF
                    blob = bytes(heap[offset : offset + length])
                    size = int.from_bytes(blob[:4], "little")
                    if blob[4 : 4 + size] == key:
                        found = blob[4 + size :]
                        break
                    found = None  # a slot of another user with the same hash, or one being reused
                slot = (slot + 1) & mask
            if header[_H_EPOCH] == epoch and found is not None:
                return found
        return None
