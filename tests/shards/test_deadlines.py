"""Deadlines: due keys in order, and memory that follows the live keys, not the keys that ever were."""

from __future__ import annotations

from shards.deadlines import SLACK, Deadlines

NOW = 1_800_000_000.0


def test_due_keys_come_out_in_deadline_order_once() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for key, at in (("c", 30.0), ("a", 10.0), ("b", 20.0)):
        deadlines.set(key, NOW + at)
    assert deadlines.pop_due(NOW + 5) == []
    assert deadlines.pop_due(NOW + 20) == [("a", NOW + 10), ("b", NOW + 20)]
    assert deadlines.pop_due(NOW + 20) == []
    assert len(deadlines) == 1 and deadlines.get("c") == NOW + 30


def test_a_new_deadline_replaces_the_old_one() -> None:
    deadlines: Deadlines[tuple[str, str]] = Deadlines()
    deadlines.set(("c1", "chat"), NOW + 10)
    deadlines.set(("c1", "chat"), NOW + 50)  # refreshed: the first deadline no longer counts
    assert deadlines.pop_due(NOW + 40) == []
    assert deadlines.pop_due(NOW + 50) == [(("c1", "chat"), NOW + 50)]
    deadlines.set(("c1", "chat"), NOW + 60)
    deadlines.set(("c1", "chat"), 0)  # refreshed to no expiry at all
    assert deadlines.pop_due(NOW + 100) == [] and len(deadlines) == 0


def test_discarded_keys_are_never_due() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("gone", NOW + 1)
    deadlines.set("stays", NOW + 2)
    deadlines.discard("gone")
    deadlines.discard("never-there")
    assert deadlines.pop_due(NOW + 10) == [("stays", NOW + 2)]


def test_churn_keeps_memory_bounded_by_the_live_keys() -> None:
    """Connections with hour-long tokens that come and go: closed ones must not stay in the heap."""
    deadlines: Deadlines[str] = Deadlines()
    for k in range(100):
        deadlines.set(f"long-lived-{k}", NOW + 3600)
    for k in range(100_000):
        deadlines.set(f"client-{k}", NOW + 3600 + k)
        deadlines.set(f"client-{k}", NOW + 7200 + k)  # a refresh as well
        deadlines.discard(f"client-{k}")
        assert deadlines.held <= 2 * len(deadlines) + SLACK + 1
    assert len(deadlines) == 100
    for k in range(100):
        deadlines.discard(f"long-lived-{k}")
    assert deadlines.held == 0
