"""The connections filter shared by router and shards, and its sliced scan (no event loop involved)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from broker import errors
from broker.config import Config
from broker.connections_filter import Scan, ScanStopped, compile_connections_filter
from broker.protocol.state import ConnectionState

ONES_900 = "[" + ",".join(["1"] * 900) + "]"
NESTED_900 = f"{ONES_900}.all(x, {ONES_900}.all(y, x == y))"


@dataclass
class Conn:
    state: ConnectionState
    closed: bool = False


def make_conns(n: int, **meta: Any) -> list[Conn]:
    conns = []
    for i in range(n):
        state = ConnectionState(f"c{i}", "", "websocket", "json", 0.0)
        state.user = str(i)
        state.meta = dict(meta)
        conns.append(Conn(state))
    return conns


def scan(expression: str, conns: list[Conn], cfg: Config | None = None, deadline: float = 60.0) -> Scan:
    cfg = cfg or Config()
    return Scan(
        compile_connections_filter(expression, cfg),
        conns,
        state=lambda c: c.state,
        is_open=lambda c: not c.closed,
        max_cost=cfg.connections_expression_max_cost,
        deadline=time.monotonic() + deadline,
    )


def run(s: Scan, limit: int = 100_000) -> int:
    """Slices until done; returns how many were needed."""
    for slices in range(1, limit):
        if s.run_slice():
            return slices
    raise AssertionError("scan did not finish")


def test_too_costly_expression_is_107_with_the_reason() -> None:
    with pytest.raises(errors.ClientError) as caught:
        compile_connections_filter(NESTED_900, Config())
    assert caught.value.code == 107
    assert "expression too costly: estimated" in caught.value.message
    assert "limit 2000" in caught.value.message
    # The limit is a configuration key.
    compile_connections_filter(NESTED_900, Config(connections_expression_max_cost=10_000_000))


def test_invalid_expression_is_107() -> None:
    with pytest.raises(errors.ClientError) as caught:
        compile_connections_filter("(" * 100 + "true" + ")" * 100, Config())
    assert caught.value.code == 107 and "levels of brackets" in caught.value.message


def test_cheap_scan_checks_the_clock_every_few_thousand_connections() -> None:
    s = scan('user.endsWith("7")', make_conns(10_000))
    assert s.chunk >= 1000
    run(s)
    assert {c.state.user for c in s.matched()} == {str(i) for i in range(10_000) if str(i).endswith("7")}


def test_costly_scan_runs_in_short_slices() -> None:
    cfg = Config(connections_expression_max_cost=10_000_000)
    expression = f"{ONES_900[:200]}].all(x, {ONES_900[:200]}].all(y, x == y)) && user.endsWith('3')"
    s = scan(expression, make_conns(200), cfg)
    # A filter this costly looks at the clock after every connection, and a slice ends after
    # SLICE_SECONDS (each connection takes several milliseconds here).
    assert s.chunk == 1
    assert not s.run_slice()
    assert s.scanned < 200
    assert run(s) > 1
    assert {c.state.user for c in s.matched()} == {str(i) for i in range(200) if str(i).endswith("3")}


def test_closed_connections_are_skipped_and_never_listed() -> None:
    cfg = Config(connections_expression_max_cost=10_000_000)
    conns = make_conns(100)
    s = scan(f"{ONES_900[:400]}].all(x, {ONES_900[:400]}].all(y, x == y))", conns, cfg)
    assert not s.run_slice()
    done = s.scanned
    assert 0 < done < 100
    for conn in conns:
        conn.closed = conn.state.user in ("0", "99")  # one already matched, one not yet scanned
    run(s)
    users = {c.state.user for c in s.matched()}
    assert users == {str(i) for i in range(1, 99)}


def test_budget_stops_data_larger_than_the_estimate() -> None:
    # meta.roles is estimated at DYNAMIC_SIZE elements; these connections carry far more.
    conns = make_conns(50, roles=["x"] * 50_000)
    s = scan('meta.roles.exists(r, r == "none")', conns)
    with pytest.raises(errors.ClientError) as caught:
        run(s)
    assert caught.value.code == 107
    assert (
        "expression too costly" in caught.value.message
        and "limit 2000 per connection" in caught.value.message
    )
    assert s.scanned < 50
    # Within the estimate, the same filter scans everything.
    run(scan('meta.roles.exists(r, r == "none")', make_conns(50, roles=["x"] * 60)))


def test_deadline_stops_the_scan() -> None:
    cfg = Config(connections_expression_max_cost=10_000_000)
    s = scan(f"{ONES_900[:400]}].all(x, {ONES_900[:400]}].all(y, x == y))", make_conns(1000), cfg, 0.05)
    with pytest.raises(ScanStopped, match="deadline passed after"):
        run(s)
    assert s.scanned < 1000


def test_refusals_are_cached_like_filters() -> None:
    from broker.connections_filter import _compiled

    cfg = Config(connections_expression_max_cost=1999)  # a cache key of its own
    for attempt in range(2):
        hits = _compiled.cache_info().hits
        with pytest.raises(errors.ClientError, match="too costly"):
            compile_connections_filter(NESTED_900, cfg)
        assert _compiled.cache_info().hits == hits + attempt
