"""start_eagerly: a coroutine that does not wait is finished in the caller's step; one that waits goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from broker import errors
from broker.eager import client_outcome, start_eagerly


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.seen.append((result, error))


def test_a_coroutine_that_never_waits_is_done_before_the_call_returns():
    async def scenario() -> None:
        async def quick() -> int:
            return 42

        outcomes = Outcomes()
        assert start_eagerly(quick(), outcomes, asyncio.get_running_loop()) is None
        assert outcomes.seen == [(42, None)]

    asyncio.run(scenario())


def test_an_error_before_any_wait_is_reported_at_once():
    async def scenario() -> None:
        async def failing() -> None:
            raise errors.NOT_AVAILABLE()

        outcomes = Outcomes()
        assert start_eagerly(failing(), outcomes, asyncio.get_running_loop()) is None
        [(result, error)] = outcomes.seen
        assert result is None and isinstance(error, errors.ClientError) and error.code == 108

    asyncio.run(scenario())


def test_a_coroutine_that_waits_goes_on_in_a_task_through_futures_and_bare_yields():
    async def scenario() -> list[tuple[Any, Any]]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[str] = loop.create_future()
        order: list[str] = []

        async def slow() -> str:
            order.append("started")
            await asyncio.sleep(0)
            value = await gate
            await asyncio.sleep(0.01)
            order.append("finished")
            return value + "!"

        outcomes = Outcomes()
        task = start_eagerly(slow(), outcomes, loop)
        assert task is not None and order == ["started"] and outcomes.seen == []
        loop.call_later(0.01, gate.set_result, "opened")
        await asyncio.wait_for(task, 2)
        assert order == ["started", "finished"]
        return outcomes.seen

    assert asyncio.run(scenario()) == [("opened!", None)]


def test_an_awaited_future_that_fails_raises_inside_the_coroutine():
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        caught: list[str] = []

        async def guarded() -> str:
            try:
                await gate
            except KeyError as exc:
                caught.append(str(exc))
                raise errors.INTERNAL() from None
            return "never"

        outcomes = Outcomes()
        task = start_eagerly(guarded(), outcomes, loop)
        assert task is not None
        gate.set_exception(KeyError("boom"))
        await asyncio.wait_for(task, 2)
        [(result, error)] = outcomes.seen
        assert result is None and isinstance(error, errors.ClientError)
        return caught

    assert asyncio.run(scenario()) == ["'boom'"]


@pytest.mark.parametrize(
    ("result", "error", "expected"),
    [
        ({"ok": 1}, None, (None, {"ok": 1})),
        (None, errors.NOT_AVAILABLE(), (108, None)),
        (None, RuntimeError("bug"), (100, None)),
    ],
)
def test_client_outcome_passes_client_errors_and_turns_faults_into_100(result, error, expected):
    got: list[tuple[Any, Any]] = []
    client_outcome(lambda err, value: got.append((err.code if err else None, value)))(result, error)
    assert got == [expected]
