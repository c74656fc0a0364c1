"""eventually(): returns the first true value, fails with the last one at the scaled deadline."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.support.waiting import eventually, eventually_async, scaled


def test_the_first_true_value_is_returned():
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "done", timeout=2, interval=0.001) == "done"


def test_a_condition_never_met_fails_with_the_last_value_after_the_scaled_deadline(monkeypatch):
    monkeypatch.setenv("SWITCHBOARD_TEST_TIMEOUT_SCALE", "2")
    assert scaled(0.1) == pytest.approx(0.2)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"not ready within 0\.2s; last: 0"):
        eventually(lambda: 0, timeout=0.1, interval=0.01, what="ready")
    assert time.monotonic() - started >= 0.2


def test_the_async_form_waits_without_blocking_the_loop():
    async def scenario() -> str:
        seen: list[int] = []

        async def check() -> str:
            seen.append(1)
            assert len(seen) >= 3, "not yet"
            return "ok"

        return await eventually_async(check, timeout=2, interval=0.001)

    assert asyncio.run(scenario()) == "ok"
