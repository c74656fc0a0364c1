"""eventually(): the first good value, retries, the last value on timeout, deadlines scaled by the env var."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.support.waiting import SCALE_ENV, eventually, eventually_async, scaled, timeout_scale


@pytest.fixture(autouse=True)
def unscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests measure the deadlines themselves: whatever scale the run has is not theirs."""
    monkeypatch.delenv(SCALE_ENV, raising=False)


def test_the_first_true_value_is_returned() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "done", interval=0.001) == "done"


def test_until_decides_and_the_value_is_returned() -> None:
    values = iter([[1], [1, 2], [1, 2, 3]])
    assert eventually(lambda: next(values), until=lambda v: len(v) == 3, interval=0.001) == [1, 2, 3]


def test_an_empty_value_is_accepted_when_until_says_so() -> None:
    assert eventually(dict, until=lambda v: v == {}) == {}


def test_assertion_errors_mean_not_yet() -> None:
    attempts = itertools.count()

    def check() -> int:
        n = next(attempts)
        assert n >= 2, n
        return n + 1

    assert eventually(check, interval=0.001) == 3


def test_other_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        eventually(lambda: {}["missing"])


def test_errors_named_in_retry_on_mean_not_yet() -> None:
    attempts = itertools.count()

    def check() -> bool:
        if next(attempts) < 2:
            raise ConnectionError("not listening yet")
        return True

    assert eventually(check, interval=0.001, retry_on=(ConnectionError,)) is True


def test_timeout_names_what_and_the_last_value() -> None:
    counter = itertools.count()
    started = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"timed out after 0\.2s waiting for the answer; last value: \d+"
    ):
        eventually(
            lambda: next(counter), until=lambda n: n < 0, timeout=0.2, interval=0.01, what="the answer"
        )
    assert 0.2 <= time.monotonic() - started < 2


def test_timeout_after_errors_names_the_last_error() -> None:
    def check() -> None:
        raise AssertionError("still 3 connections")

    with pytest.raises(AssertionError, match="last error: AssertionError\\('still 3 connections'\\)"):
        eventually(check, timeout=0.05, interval=0.01)


def test_the_env_var_scales_every_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert timeout_scale() == 1.0 and scaled(2) == 2
    monkeypatch.setenv(SCALE_ENV, "3")
    assert scaled(2) == 6
    with pytest.raises(AssertionError, match=r"timed out after 0\.3s"):
        eventually(lambda: False, timeout=0.1, interval=0.01)


@pytest.mark.parametrize("raw", ["0", "-1", "slow"])
def test_a_bad_scale_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(SCALE_ENV, raw)
    with pytest.raises(ValueError, match=SCALE_ENV):
        scaled(1)


def test_async_variant_takes_plain_and_awaitable_checks() -> None:
    async def scenario() -> None:
        seen: list[int] = []
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, seen.append, 1)
        assert await eventually_async(lambda: seen) == [1]  # the loop ran between the calls

        counter = itertools.count()

        async def probe() -> int:
            await asyncio.sleep(0)
            return next(counter)

        assert await eventually_async(probe, until=lambda n: n == 3, interval=0.001) == 3
        with pytest.raises(AssertionError, match="last value: 0"):
            await eventually_async(lambda: 0, timeout=0.05, interval=0.01)

    asyncio.run(scenario())
