"""Shared-memory segments: names checked, a foreign layout refused, removal idempotent."""

from __future__ import annotations

import os
import uuid

import pytest

from broker.ipc.segments import checked_header, open_segment, remove_segment, shm_path


def test_names_are_checked() -> None:
    assert shm_path("switchboard-x") == "/switchboard-x"
    for bad in ("", "a/b", "x" * 201):
        with pytest.raises(ValueError, match="invalid shared-memory name"):
            shm_path(bad)


def test_a_segment_of_another_layout_is_refused_and_removal_is_idempotent() -> None:
    name = f"switchboard-test-seg-{uuid.uuid4().hex[:8]}"
    fd, mm = open_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 4096)
    try:
        with pytest.raises(ValueError, match=f"'{name}' is not a thing"):
            checked_header(mm, 4, 0x1234, name, "a thing")
        mm[:8] = (0x1234).to_bytes(8, "little")
        buf, header = checked_header(mm, 4, 0x1234, name, "a thing")
        assert header[0] == 0x1234 and len(buf) == 4096
        header.release()
        buf.release()
    finally:
        mm.close()
        os.close(fd)
        remove_segment(name)
    remove_segment(name)  # gone already: no error
    with pytest.raises(FileNotFoundError):
        open_segment(name, os.O_RDWR)
