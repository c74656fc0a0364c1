"""POSIX shared-memory segments: open, map, check the layout's magic word, remove.

Opened with ``_posixshmem`` (what :mod:`multiprocessing.shared_memory` uses) rather than
``SharedMemory``, because Python 3.11's resource tracker unlinks a segment when *any* process that
attached it exits.
"""

from __future__ import annotations

import _posixshmem
import mmap
import os


def shm_path(name: str) -> str:
    """``/name`` for ``shm_open``; 1-200 characters, no ``/`` of its own."""
    if not name or "/" in name or len(name) > 200:
        raise ValueError(f"invalid shared-memory name {name!r}: 1-200 characters, no '/'")
    return "/" + name


def open_segment(name: str, flags: int, size: int = 0) -> tuple[int, mmap.mmap]:
    """Open (``flags`` as for ``os.open``) and map segment ``name``; ``size`` sets its length first."""
    fd = _posixshmem.shm_open(shm_path(name), flags, mode=0o600)
    try:
        if size:
            os.ftruncate(fd, size)  # a new segment reads as zeros
        mm = mmap.mmap(fd, size or os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise
    return fd, mm


def remove_segment(name: str) -> None:
    try:
        _posixshmem.shm_unlink(shm_path(name))
    except FileNotFoundError:
        pass


def checked_header(
    mm: mmap.mmap, words: int, magic: int, name: str, kind: str
) -> tuple[memoryview, memoryview]:
    """The mapping as bytes and its first ``words`` uint64 header words, whose first must be ``magic``;
    ValueError (nothing left referenced) when it is another layout."""
    buf = memoryview(mm)
    header = buf[: words * 8].cast("Q")
    if header[0] != magic:
        header.release()
        buf.release()
        raise ValueError(f"shared-memory segment {name!r} is not {kind} (or has another layout)")
    return buf, header
