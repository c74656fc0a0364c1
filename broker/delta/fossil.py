"""Fossil deltas: encode a target as copies from a source plus literal inserts, and apply one.

The format (Fossil SCM's, which centrifuge-js and centrifuge-python decode):

    <target length>\\n  then commands  <n>@<offset>,  (copy n bytes of the source from offset)
                                       <n>:<n bytes>   (insert these bytes)
                        and finally    <checksum>;     (of the target)

Integers are written in base 64 with the digits ``0-9 A-Z _ a-z ~``, most significant first. The
checksum is the sum, modulo 2**32, of the target read as big-endian 32-bit words (the last one padded
with zero bytes).

Encoding indexes the source in blocks of :data:`BLOCK` bytes and walks the target looking each window up;
a hit is stretched backwards over the pending literal and forwards as far as both agree. Cost is linear
in the sizes (one dict lookup per target byte without a match), computed once per publication, and a
size limit ends the scan as soon as the delta could no longer pay off.
"""

from __future__ import annotations

import struct

BLOCK = 16  # bytes per indexed source block, the smallest copy worth a command
_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUES = {d: i for i, d in enumerate(_DIGITS)}
_STRIDE = 64  # bytes compared at once when stretching a match forwards


class DeltaError(ValueError):
    """A delta that does not apply to the source it was given."""


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(_DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def encode(source: bytes, target: bytes) -> bytes:
    """A delta that turns ``source`` into ``target``."""
    delta = encode_within(source, target, None)
    assert delta is not None
    return delta


def encode_within(source: bytes, target: bytes, limit: int | None) -> bytes | None:
    """:func:`encode`, or None once the delta would exceed ``limit`` bytes (the scan stops there, so
    an unrelated target costs a fraction of a full scan)."""
    out = bytearray(_int(len(target)) + b"\n")
    index: dict[bytes, int] = {}
    if len(source) >= BLOCK:
        for start in range(len(source) - BLOCK, -1, -BLOCK):  # backwards: the first block wins
            index[source[start : start + BLOCK]] = start
    literal = 0  # start of the target bytes not yet emitted
    pos = 0
    end = len(target) - BLOCK
    while pos <= end:
        found = index.get(target[pos : pos + BLOCK])
        if found is None:
            pos += 1
            if limit is not None and len(out) + pos - literal > limit:
                return None
            continue
        src, tgt = found, pos
        while tgt > literal and src > 0 and target[tgt - 1] == source[src - 1]:
            tgt -= 1
            src -= 1
        length = _match_length(source, src, target, tgt)
        if tgt > literal:
            out += _int(tgt - literal) + b":" + target[literal:tgt]
        out += _int(length) + b"@" + _int(src) + b","
        pos = literal = tgt + length
    if literal < len(target):
        out += _int(len(target) - literal) + b":" + target[literal:]
    out += _int(checksum(target)) + b";"
    if limit is not None and len(out) > limit:
        return None
    return bytes(out)


def _match_length(source: bytes, src: int, target: bytes, tgt: int) -> int:
    length = 0
    limit = min(len(source) - src, len(target) - tgt)
    while length + _STRIDE <= limit and (
        source[src + length : src + length + _STRIDE] == target[tgt + length : tgt + length + _STRIDE]
    ):
        length += _STRIDE
    while length < limit and source[src + length] == target[tgt + length]:
        length += 1
    return length


def apply(source: bytes, delta: bytes) -> bytes:
    """The target ``delta`` describes; raises :class:`DeltaError` if it does not fit ``source``."""
    reader = _Reader(delta)
    size = reader.integer()
    if reader.char() != ord("\n"):
        raise DeltaError("size not terminated by a newline")
    out = bytearray()
    while reader.pos < len(delta):
        count = reader.integer()
        op = reader.char()
        if op == ord("@"):
            offset = reader.integer()
            if reader.char() != ord(","):
                raise DeltaError("copy not terminated by a comma")
            if offset + count > len(source):
                raise DeltaError("copy past the end of the source")
            out += source[offset : offset + count]
        elif op == ord(":"):
            if reader.pos + count > len(delta):
                raise DeltaError("insert past the end of the delta")
            out += delta[reader.pos : reader.pos + count]
            reader.pos += count
        elif op == ord(";"):
            if len(out) != size:
                raise DeltaError("target size differs from the announced one")
            if count != checksum(bytes(out)):
                raise DeltaError("bad checksum")
            return bytes(out)
        else:
            raise DeltaError(f"unknown operator {op!r}")
        if len(out) > size:
            raise DeltaError("target larger than announced")
    raise DeltaError("delta not terminated")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def char(self) -> int:
        if self.pos >= len(self.data):
            raise DeltaError("delta ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def integer(self) -> int:
        value = 0
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] in _VALUES:
            value = (value << 6) + _VALUES[self.data[self.pos]]
            self.pos += 1
        if self.pos == start:
            raise DeltaError("integer expected")
        return value
