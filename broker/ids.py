"""Random identifiers (UUID version 4 strings) for clients and sessions, without a system call each.

``uuid.uuid4()`` reads 16 bytes from the kernel per call; at thousands of connections per second that
system call shows in profiles. Here random bytes are read from ``os.urandom`` 4 KiB at a time and cut
into UUIDs, which keeps them unpredictable while costing one read per 256 identifiers.
"""

from __future__ import annotations

import os
import uuid

_BATCH = 4096
_pool = b""
_offset = 0


def new_id() -> str:
    global _pool, _offset
    if _offset + 16 > len(_pool):
        _pool = os.urandom(_BATCH)
        _offset = 0
    raw = _pool[_offset : _offset + 16]
    _offset += 16
    return str(uuid.UUID(bytes=raw, version=4))
