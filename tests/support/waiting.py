"""Waiting for a condition instead of sleeping a fixed time.

:func:`eventually` (and :func:`eventually_async` inside an event loop) calls ``check`` until its value
is what the test waits for, and fails with the last value seen when the deadline passes. Every deadline
here goes through :func:`scaled`, so that a slow machine can stretch them all at once.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")

SCALE_ENV = "SWITCHBOARD_TEST_TIMEOUT_SCALE"
DEFAULT_INTERVAL = 0.05

_NOTHING = object()


def timeout_scale() -> float:
    """The factor from :data:`SCALE_ENV` (1.0 when unset)."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a number, not {raw!r}") from None
    if scale <= 0:
        raise ValueError(f"{SCALE_ENV} must be positive, not {raw!r}")
    return scale


def scaled(seconds: float) -> float:
    """A test deadline of ``seconds`` on this machine."""
    return seconds * timeout_scale()


class _Attempts:
    """What :func:`eventually` saw so far, and whether it may try again."""

    def __init__(
        self,
        until: Callable[[Any], bool] | None,
        timeout: float,
        what: str,
        retry_on: tuple[type[BaseException], ...],
    ) -> None:
        self.until = until
        self.timeout = scaled(timeout)
        self.deadline = time.monotonic() + self.timeout
        self.what = what
        self.retry_on = retry_on
        self.last: Any = _NOTHING
        self.error: BaseException | None = None

    def done(self, value: Any) -> bool:
        self.last, self.error = value, None
        return bool(self.until(value)) if self.until is not None else bool(value)

    def failed(self, error: BaseException) -> None:
        self.error = error

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def give_up(self) -> AssertionError:
        what = f" for {self.what}" if self.what else ""
        if self.error is not None:
            seen = f"last error: {self.error!r}"
        elif self.last is _NOTHING:
            seen = "nothing seen"
        else:
            seen = f"last value: {self.last!r}"
        failure = AssertionError(f"timed out after {self.timeout:g}s waiting{what}; {seen}")
        failure.__cause__ = self.error
        return failure


def eventually(
    check: Callable[[], T],
    *,
    until: Callable[[T], bool] | None = None,
    timeout: float = 5.0,
    interval: float = DEFAULT_INTERVAL,
    what: str = "",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """``check()``'s first value that is true (or for which ``until`` holds), polling every ``interval``.

    An exception of a ``retry_on`` type counts as "not yet". After ``timeout`` seconds (scaled by
    :data:`SCALE_ENV`) an AssertionError names ``what`` and the last value or error seen.
    """
    attempts = _Attempts(until, timeout, what, retry_on)
    while True:
        try:
            value = check()
            if attempts.done(value):
                return value
        except retry_on as error:
            attempts.failed(error)
        if attempts.expired():
            raise attempts.give_up()
        time.sleep(interval)  # the polling interval


async def eventually_async(
    check: Callable[[], T | Awaitable[T]],
    *,
    until: Callable[[T], bool] | None = None,
    timeout: float = 5.0,
    interval: float = DEFAULT_INTERVAL,
    what: str = "",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """:func:`eventually` for a running event loop: ``check`` may be a plain function or return an
    awaitable, and the loop keeps running between the calls."""
    attempts = _Attempts(until, timeout, what, retry_on)
    while True:
        try:
            result = check()
            value = cast(T, await result) if inspect.isawaitable(result) else result
            if attempts.done(value):
                return value
        except retry_on as error:
            attempts.failed(error)
        if attempts.expired():
            raise attempts.give_up()
        await asyncio.sleep(interval)  # the polling interval
