"""Waiting for a condition, with a deadline scaled for slow machines (see :mod:`tests.support`)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

SCALE_VARIABLE = "SWITCHBOARD_TEST_TIMEOUT_SCALE"


def scaled(seconds: float) -> float:
    """``seconds`` times the machine's timeout scale (``SWITCHBOARD_TEST_TIMEOUT_SCALE``, default 1)."""
    try:
        scale = float(os.environ.get(SCALE_VARIABLE, "1") or 1)
    except ValueError:
        scale = 1.0
    return seconds * max(scale, 0.1)


class _Watch:
    """The deadline of one wait and the last value seen, for the failure message."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = scaled(timeout)
        self.deadline = time.monotonic() + self.timeout
        self.what = what or "true"
        self.last: object = None

    def over(self) -> bool:
        if time.monotonic() < self.deadline:
            return False
        raise AssertionError(f"not {self.what} within {self.timeout:.1f}s; last: {self.last!r}")


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.05, what: str = "") -> T:
    """Call ``check`` until it returns something true and return that; fail with the last value seen
    after ``timeout`` (scaled) seconds. An ``AssertionError`` raised by ``check`` counts as not yet."""
    watch = _Watch(timeout, what)
    while True:
        try:
            watch.last = value = check()
            if value:
                return value
        except AssertionError as exc:
            watch.last = exc
        watch.over()
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.05, what: str = ""
) -> T:
    """:func:`eventually` for a coroutine check, without blocking the event loop."""
    watch = _Watch(timeout, what)
    while True:
        try:
            watch.last = value = await check()
            if value:
                return value
        except AssertionError as exc:
            watch.last = exc
        watch.over()
        await asyncio.sleep(interval)
