"""Micro-benchmarks for broker.cel (run with ``pytest -m slow bench/test_bench_cel.py``).

* compile time of typical filters (the Lark parser itself is built once per process, before timing);
* a full scan of 10,000 session objects per expression, i.e. what one shard does for a connections
  request without usable index hints;
* for comparison, celpy's CompiledRunner evaluating one expression over 1,000 prepared activations
  (activation conversion with ``json_to_cel`` excluded, although a server would have to pay it too).
"""

from __future__ import annotations

import operator
import random
from typing import Any

import celpy
import pytest

from broker.cel import CONNECTION_VARIABLES, compile_filter

pytestmark = pytest.mark.slow

SESSIONS_PER_SCAN = 10_000

SCAN_EXPRESSIONS = {
    "user_eq": 'user == "42"',
    "channel_in": '"chat:1" in channels',
    "meta_and_size": 'meta.tenant == "acme" && size(channels) > 0',
    "prefix_or_transport": 'app_name.startsWith("term") || transport == "uni_sse"',
    "exists_macro": 'channels.exists(c, c.startsWith("chat:1"))',
    "has_and_region": 'has(meta.region) && meta.region.startsWith("e") && size(channels) > 2',
    "regex_or_suffix": 'user.matches("^4[0-9]$") || client.endsWith("-99")',
}


class Session:
    __slots__ = CONNECTION_VARIABLES

    def __init__(self, **values: Any) -> None:
        for name in CONNECTION_VARIABLES:
            setattr(self, name, values[name])


VARIABLES = {name: operator.attrgetter(name) for name in CONNECTION_VARIABLES}


def make_session_values(i: int, rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {"tenant": ("acme", "globex", "initech")[i % 3]}
    if i % 10:  # 10% of sessions have no region: a CEL error for meta.region
        meta["region"] = ("eu", "us", "ap")[i % 3]
    return {
        "user": str(i % 5000),
        "client": f"client-{i}",
        "session": f"s{i}" if i % 4 == 0 else "",
        "app_name": ("terminal", "web", "mobile")[i % 3],
        "app_version": "1.2.0",
        "transport": ("websocket", "uni_sse", "http_stream")[i % 3],
        "protocol": "json",
        "channels": [f"chat:{rng.randrange(100)}" for _ in range(1 + i % 4)] + ["news"],
        "meta": meta,
        "info": {},
    }


@pytest.fixture(scope="module")
def session_values() -> list[dict[str, Any]]:
    rng = random.Random(42)
    return [make_session_values(i, rng) for i in range(SESSIONS_PER_SCAN)]


@pytest.fixture(scope="module")
def sessions(session_values: list[dict[str, Any]]) -> list[Session]:
    return [Session(**values) for values in session_values]


@pytest.mark.parametrize("name", list(SCAN_EXPRESSIONS))
def test_compile(benchmark: Any, name: str) -> None:
    expression = SCAN_EXPRESSIONS[name]
    compile_filter(expression, VARIABLES)  # build the parser outside the timing
    benchmark(compile_filter, expression, VARIABLES)


@pytest.mark.parametrize("name", list(SCAN_EXPRESSIONS))
def test_scan_10k(benchmark: Any, sessions: list[Session], name: str) -> None:
    expression = SCAN_EXPRESSIONS[name]

    def fresh_filter() -> tuple[tuple[Any, ...], dict[str, Any]]:
        # A new filter per round, as per request in the server: the regex memo starts empty.
        return (compile_filter(expression, VARIABLES).matches,), {}

    def scan(matches: Any) -> int:
        return sum(1 for session in sessions if matches(session))

    matched = benchmark.pedantic(scan, setup=fresh_filter, rounds=40, warmup_rounds=2)
    assert 0 < matched < SESSIONS_PER_SCAN


def test_scan_10k_handwritten_floor(benchmark: Any, sessions: list[Session]) -> None:
    """The same scan as user_eq with a hand-written predicate: the floor for any approach."""
    get_user = operator.attrgetter("user")

    def matches(session: Session) -> bool:
        try:
            return get_user(session) == "42"
        except Exception:
            return False

    def scan() -> int:
        return sum(1 for session in sessions if matches(session))

    assert benchmark(scan) > 0


def test_celpy_compiled_runner_1k(benchmark: Any, session_values: list[dict[str, Any]]) -> None:
    activations = [
        {name: celpy.json_to_cel(value) for name, value in values.items()} for values in session_values[:1000]
    ]
    # celpy caches one process-wide parser per tree class; the compiled runner needs its own.
    celpy.CELParser.CEL_PARSER = None
    try:
        env = celpy.Environment(runner_class=celpy.CompiledRunner)
        program = env.program(env.compile(SCAN_EXPRESSIONS["meta_and_size"]))
    finally:
        celpy.CELParser.CEL_PARSER = None

    def scan() -> int:
        matched = 0
        for activation in activations:
            try:
                result = program.evaluate(activation)
            except Exception:
                continue
            if isinstance(result, celpy.celtypes.BoolType) and result:
                matched += 1
        return matched

    assert benchmark(scan) > 0
