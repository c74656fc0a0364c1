"""Start a coroutine at once, in the caller's step, and pay for a task only if it really waits.

The engines' methods are coroutines because an engine may be remote, but the memory engine never
suspends. Wrapping each call in a task would defer every publish and every answer by a loop iteration
and break up the batches that fan-out and the control plane coalesce. ``start_eagerly`` runs the
coroutine until it first suspends: a coroutine that finishes is answered within the same step (what
Python 3.12's eager task factory does); one that suspends goes on in a task.

A process whose engine is networked turns this off at boot (:func:`run_in_tasks`): its client library
(redis-py) opens connections under ``asyncio.timeout``, which needs a current task, and a remote call
suspends anyway, so nothing is saved by starting it outside one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from broker import errors
from broker.errors import ClientError

T = TypeVar("T")
log = logging.getLogger("switchboard.shard")

Done = Callable[[Any, BaseException | None], None]


def client_outcome(done: Callable[[ClientError | None, Any], None]) -> Done:
    """An outcome handed on as ``done(error, result)``: a client error as it is, anything else 100
    (with one log line: it is a fault of ours, not of the request)."""

    def settle(result: Any, error: BaseException | None) -> None:
        if error is None:
            done(None, result)
        elif isinstance(error, ClientError):
            done(error, None)
        else:
            log.error("a request failed: %r", error)
            done(errors.INTERNAL(), None)

    return settle


_eager = True


def run_in_tasks() -> None:
    """From now on every coroutine :func:`start_eagerly` is given runs in a task of its own."""
    global _eager
    _eager = False


def start_eagerly(
    coroutine: Coroutine[Any, Any, T], done: Done, loop: asyncio.AbstractEventLoop
) -> asyncio.Task[None] | None:
    """Run ``coroutine``; ``done(result, None)`` or ``done(None, error)`` when it ends.

    Returns None when it ended within this call, else the task that carries it on.
    """
    if not _eager:
        # Not started yet: the task's first step starts it (``yielded`` None is one turn of the loop).
        return loop.create_task(_carry_on(coroutine, None, done, loop))
    try:
        yielded = coroutine.send(None)
    except StopIteration as stop:
        done(stop.value, None)
        return None
    except Exception as exc:
        done(None, exc)
        return None
    return loop.create_task(_carry_on(coroutine, yielded, done, loop))


async def _carry_on(
    coroutine: Coroutine[Any, Any, Any], yielded: Any, done: Done, loop: asyncio.AbstractEventLoop
) -> None:
    try:
        result = await _Resumed(coroutine, yielded, loop)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        done(None, exc)
        return
    done(result, None)


class _Resumed:
    """Awaitable that drives a coroutine already started, the way a task drives one."""

    def __init__(
        self, coroutine: Coroutine[Any, Any, Any], yielded: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.coroutine = coroutine
        self.yielded = yielded
        self.loop = loop

    def __await__(self) -> Generator[Any, None, Any]:
        coroutine, yielded = self.coroutine, self.yielded
        while True:
            if yielded is not None:
                # It awaits an asyncio future: wait for it without taking its result (the coroutine
                # reads that itself when resumed), clearing the flag a task would clear.
                yielded._asyncio_future_blocking = False
                waiter = self.loop.create_future()
                yielded.add_done_callback(lambda _f, w=waiter: w.done() or w.set_result(None))
                try:
                    yield from waiter
                except BaseException as exc:
                    try:
                        yielded = coroutine.throw(exc)
                    except StopIteration as stop:
                        return stop.value
                    continue
            else:
                yield  # a bare yield (asyncio.sleep(0)): one turn of the loop
            try:
                yielded = coroutine.send(None)
            except StopIteration as stop:
                return stop.value
