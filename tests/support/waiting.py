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


def eventually(check: Callable[[], T], timeout: float = 5.0, interval: float = 0.05, what: str = "") -> T:
    """Call ``check`` until it returns something true and return that; fail with the last value seen
    after ``timeout`` (scaled) seconds. An ``AssertionError`` raised by ``check`` counts as not yet."""
    deadline = time.monotonic() + scaled(timeout)
    last: object = None
    while True:
        try:
            value = check()
        except AssertionError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not {what or 'true'} within {scaled(timeout):.1f}s; last: {last!r}")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]], timeout: float = 5.0, interval: float = 0.05, what: str = ""
) -> T:
    """:func:`eventually` for a coroutine check, without blocking the event loop."""
    deadline = time.monotonic() + scaled(timeout)
    last: object = None
    while True:
        try:
            value = await check()
        except AssertionError as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not {what or 'true'} within {scaled(timeout):.1f}s; last: {last!r}")
        await asyncio.sleep(interval)
