"""Session-wide clean-up: the shared-memory segments of servers the tests killed with SIGKILL.

A server removes its segments when it stops; one killed outright cannot. In production the next start
reuses the same names (they derive from the runtime directory), but every test server has a fresh
runtime directory, so the suite removes the segments that appeared while it ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")
PREFIX = "switchboard-"


def _segments() -> set[str]:
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if p.name.startswith(PREFIX)}


@pytest.fixture(scope="session", autouse=True)
def remove_segments_left_by_killed_servers() -> Iterator[None]:
    before = _segments()
    yield
    for name in _segments() - before:
        (SHM / name).unlink(missing_ok=True)
