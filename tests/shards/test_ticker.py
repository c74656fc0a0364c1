"""The ping wheel: which connections a tick pings and checks, driven by a clock the test controls."""

from __future__ import annotations

from collections import Counter

from shards.ticker import PingWheel

START = 1_800_000_000.0


def wheel_with(interval: float, pong_timeout: float, items: int) -> PingWheel[int]:
    wheel: PingWheel[int] = PingWheel(interval, pong_timeout, START)
    for item in range(items):
        wheel.add(item, START + item)  # item k connected in second k: bucket k % interval
    return wheel


def test_each_second_pings_its_bucket_once() -> None:
    wheel = wheel_with(25, 8, 100)
    pinged: Counter[int] = Counter()
    for second in range(1, 26):
        to_ping, _ = wheel.advance(START + second + 0.3)
        assert sorted(to_ping) == [k for k in range(100) if k % 25 == second % 25]
        pinged.update(to_ping)
    assert set(pinged) == set(range(100)) and set(pinged.values()) == {1}


def test_a_late_tick_catches_up_once() -> None:
    wheel = wheel_with(25, 8, 100)
    wheel.advance(START + 1)
    # Asleep for seconds 2..5: one tick pings the buckets of 2, 3, 4 and 5, each once.
    to_ping, _ = wheel.advance(START + 5.9)
    assert Counter(to_ping) == Counter(k for k in range(100) if k % 25 in (2, 3, 4, 5))
    # Woken several times within the same second (the old loop's catch-up burst): nothing more.
    for extra in (5.95, 5.99, 5.0):
        assert wheel.advance(START + extra) == ([], [])


def test_a_jump_longer_than_the_interval_pings_everyone_once() -> None:
    wheel = wheel_with(10, 3, 40)
    to_ping, to_check = wheel.advance(START + 1000)
    assert sorted(to_ping) == list(range(40))
    assert sorted(to_check) == list(range(40))


def test_a_clock_going_back_does_nothing() -> None:
    wheel = wheel_with(10, 3, 40)
    wheel.advance(START + 5)
    assert wheel.advance(START + 2) == ([], [])
    to_ping, _ = wheel.advance(START + 6)
    assert sorted(to_ping) == [k for k in range(40) if k % 10 == 6]


def test_pongs_are_checked_timeout_plus_one_second_after_the_ping() -> None:
    wheel = wheel_with(25, 8, 50)
    for second in range(1, 40):
        _, to_check = wheel.advance(START + second)
        assert sorted(to_check) == [k for k in range(50) if k % 25 == (second - 9) % 25]
    # A late tick checks the buckets of every second it covers.
    _, to_check = wheel.advance(START + 42)
    assert {k % 25 for k in to_check} == {(s - 9) % 25 for s in (40, 41, 42)}


def test_removed_connections_are_not_pinged() -> None:
    wheel = wheel_with(5, 2, 10)
    for item in range(10):
        wheel.discard(item, START + item)
    assert len(wheel) == 0
    assert wheel.advance(START + 100) == ([], [])
