"""Differential tests: broker.cel against celpy, the reference CEL implementation in Python.

Every expression in EXPRESSIONS is evaluated by both implementations on every activation in ACTIVATIONS.
celpy's result counts as "matched" only when it is exactly the CEL value ``true``; celpy errors (raised or
returned as CELEvalError) count as "not matched", which is also how the connections API treats errors.

INTENDED_DEVIATIONS lists expressions where broker.cel disagrees with celpy on purpose, each with the
reason; for those we assert that celpy really does answer differently (so the list stays honest) and
that we return the value we chose.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import celpy
import pytest
from celpy import celtypes

from broker.cel import CONNECTION_VARIABLES, compile_filter

ACTIVATIONS: list[dict[str, Any]] = [
    {
        "user": "42",
        "client": "c-1",
        "session": "s1",
        "app_name": "terminal",
        "app_version": "1.2.0",
        "transport": "websocket",
        "protocol": "json",
        "channels": ["chat:1", "news", "chat:index"],
        "meta": {
            "tenant": "acme",
            "region": "eu",
            "roles": ["admin", "dev"],
            "age": 17,
            "score": 2.5,
            "flags": {"beta": True},
        },
        "info": {"name": "Alice", "vip": True},
    },
    {
        "user": "7",
        "client": "c-99",
        "session": "",
        "app_name": "web",
        "app_version": "",
        "transport": "uni_sse",
        "protocol": "json",
        "channels": [],
        "meta": {},
        "info": {},
    },
    {
        "user": "",
        "client": "c-3",
        "session": "s3",
        "app_name": "terminal-pro",
        "app_version": "2.0",
        "transport": "websocket",
        "protocol": "protobuf",
        "channels": ["news"],
        "meta": {"tenant": "globex", "region": "us", "roles": [], "age": 40, "score": 1.0},
        "info": {"name": "Bob", "vip": False},
    },
    {
        # Values of unexpected types: every operator must fail or answer like celpy.
        "user": "43",
        "client": "c-4",
        "session": "s4",
        "app_name": "",
        "app_version": "1.0",
        "transport": "http_stream",
        "protocol": "json",
        "channels": ["a", "b", "c", "d"],
        "meta": {"tenant": 5, "region": None, "roles": "admin", "age": "x", "flags": {}},
        "info": {"vip": "yes"},
    },
]

# The v6 variables: labels (the token's), when the connection started and its last ping round trip.
for _index, _values in enumerate(ACTIVATIONS):
    _values.setdefault("labels", {"region": "eu", "tier": "gold"} if _index == 0 else {})
    _values.setdefault("connected_at_ms", 1_700_000_000_000 + _index * 1000)
    _values.setdefault("ping_pong_latency_ms", 12 if _index == 0 else -1)

EXPRESSIONS = [
    'labels.region == "eu"',
    '"tier" in labels && labels.tier != "free"',
    "ping_pong_latency_ms >= 0 && ping_pong_latency_ms < 50",
    "connected_at_ms > 1700000000500",
    # equality and the fused literal fast paths
    'user == "42"',
    '"42" == user',
    'user != "42"',
    'client == "c-1" && user == "42"',
    'meta.tenant == "acme"',
    'meta["region"] == "eu"',
    'meta.region == "eu" || meta.region == "us"',
    'meta.region.size() == 2 && meta.region != "us"',
    "meta.region == null",
    "null == null",
    "info.vip == true",
    "meta.flags.beta",
    "meta.flags.beta == true",
    'session == "s1" || session == ""',
    '!(user == "42") && !(app_name == "web")',
    # membership
    '"chat:1" in channels',
    '"chat:1" in channels && "news" in channels',
    '!("chat:1" in channels)',
    '"admin" in meta.roles',
    '"roles" in meta',
    '!("roles" in meta) || "admin" in meta.roles',
    'transport in ["websocket", "uni_sse"]',
    'user in ["1", "2"]',
    '"a" in ["a", "b"] && !("c" in ["a", "b"])',
    "1 in [1, 2]",
    '"k" in {"k": 1}',
    # has()
    "has(meta.region)",
    "!has(meta.region)",
    'has(meta.region) && meta.region.startsWith("e") && size(channels) > 2',
    "has(info.vip) && info.vip",
    # strings
    'app_name.startsWith("term") || transport == "uni_sse"',
    'app_name.endsWith("pro")',
    'app_name.contains("rmi")',
    'user.matches("^4[0-9]$") || client.endsWith("-99")',
    'user.matches("^[0-9]+$")',
    'client.matches("c-[0-9]")',
    'app_version.startsWith("1.") && protocol == "json"',
    '"a" + "b" == "ab"',
    'user + client == "42c-1"',
    '"x" < "y" && user < "5"',
    'meta.tenant < "b"',
    'r"\\d+" == "\\\\d+"',
    '"\\x41\\u0042" == "AB"',
    # size
    "size(channels) == 0",
    "channels.size() >= 3",
    "size(user) == 2",
    "user.size() > 0",
    "size(meta) > 3",
    "size(meta.roles) == 2",
    # comprehension macros
    'channels.exists(c, c.startsWith("chat:"))',
    "channels.all(c, c.size() > 3)",
    'channels.exists_one(c, c == "news")',
    'channels.filter(c, c.startsWith("chat")).size() == 2',
    'channels.map(c, c + "!").exists(c, c == "news!")',
    'meta.roles.exists(r, r == "admin")',
    'meta.exists(k, k == "tenant")',
    "meta.all(k, k.size() > 2)",
    "[1, 2, 3].exists(x, x == 2)",
    'channels.filter(c, c == "news") == ["news"]',
    # arithmetic and ordering on ints and doubles
    "meta.age > 18",
    "meta.age >= 17 && meta.age < 30",
    "meta.age + 1 == 18",
    "meta.age * 2 > 50",
    "meta.age / 2 == 8",
    "meta.age % 5 == 2",
    "-meta.age < 0",
    "meta.score > 2.0",
    "meta.score * 2.0 == 5.0",
    "7 / 2 == 3",
    "-7 / 2 == -3",
    "7 % -3 == 1",
    "-7 % 3 == -1",
    "1 / 0 == 0",
    "9223372036854775807 + 1 > 0",
    "-9223372036854775808 - 1 < 0",
    "2.0 / 4.0 == 0.5",
    # errors and their absorption by && and ||
    "meta.missing == 1",
    "meta.missing == 1 || true",
    "true || meta.missing == 1",
    "meta.missing == 1 && false",
    "false && meta.missing == 1",
    "!(meta.missing == 1 && false)",
    'meta.missing == 1 || user == "42"',
    # ternary, indexing, literals
    'user == "42" ? meta.tenant == "acme" : false',
    'size(channels) > 0 ? channels[0] == "chat:1" : true',
    'channels[0] == "chat:1"',
    'channels[10] == "x"',
    'meta.roles[0] == "admin"',
    "[1, 2, 3][1] == 2",
    '{"a": 1, "b": 2}.a == 1',
    '{"a": 1}["a"] + 1 == 2',
    "[1] + [2] == [1, 2]",
    "[1, 2] == [1, 2]",
    '{"a": 1} == {"a": 1}',
    'meta.roles == ["admin", "dev"]',
    # conversions
    'int("42") == 42',
    "int(2.9) == 2",
    "int(-2.9) == -2",
    "double(3) == 3.0",
    'string(42) == "42"',
    'bool("true")',
    "int(user) > 40",
]

# Expressions where we deliberately answer differently from celpy:
# (expression, reason, our expected matches() per activation).
INTENDED_DEVIATIONS: list[tuple[str, str, list[bool]]] = [
    (
        "true == 1",
        "CEL has no bool/int equivalence; celpy compares Python values and says true == 1",
        [False, False, False, False],
    ),
    (
        "[1, true] == [1, 1]",
        "same bool/int issue inside list equality",
        [False, False, False, False],
    ),
    (
        "1 == 1.0",
        "the current CEL spec compares int and double numerically; celpy reports no matching overload",
        [True, True, True, True],
    ),
    (
        "meta.age >= 17.5",
        "heterogeneous numeric ordering (int vs double) is allowed by the current spec; celpy errors",
        [False, False, True, False],
    ),
    (
        'meta.tenant != "acme"',
        "values of different types are simply unequal in CEL; celpy errors on int != string",
        [False, False, True, True],
    ),
    (
        '"a" in "abc"',
        "CEL defines 'in' for lists and maps only (cel-go: no matching overload); celpy tests substrings",
        [False, False, False, False],
    ),
    (
        'string(true) == "true"',
        "CEL formats bools as true/false; celpy gives Python's 'True'",
        [True, True, True, True],
    ),
    (
        "'''multi\nline'''.size() == 10",
        "a triple-quoted string keeps its newline; celpy drops it and counts 9",
        [True, True, True, True],
    ),
]


class Session:
    """Shaped like the hub's session objects: attributes, no __dict__."""

    __slots__ = CONNECTION_VARIABLES

    def __init__(self, values: Mapping[str, Any]) -> None:
        for name in CONNECTION_VARIABLES:
            setattr(self, name, values[name])


VARIABLES = {name: operator.attrgetter(name) for name in CONNECTION_VARIABLES}
SESSIONS = [Session(values) for values in ACTIVATIONS]


@pytest.fixture(scope="module")
def celpy_env() -> celpy.Environment:
    # Another test may have left celpy's process-wide parser built for a different runner.
    celpy.CELParser.CEL_PARSER = None
    return celpy.Environment()


def celpy_matches(env: celpy.Environment, expression: str) -> list[bool]:
    program = env.program(env.compile(expression))
    results = []
    for values in ACTIVATIONS:
        activation = {name: celpy.json_to_cel(value) for name, value in values.items()}
        try:
            result = program.evaluate(activation)
        except Exception:
            results.append(False)
            continue
        results.append(isinstance(result, celtypes.BoolType) and bool(result))
    return results


def our_matches(expression: str) -> list[bool]:
    compiled = compile_filter(expression, VARIABLES)
    return [compiled.matches(session) for session in SESSIONS]


def test_corpus_size() -> None:
    assert len(EXPRESSIONS) >= 60
    assert len(set(EXPRESSIONS)) == len(EXPRESSIONS)
    assert len(ACTIVATIONS) >= 3
    deviating = {expression for expression, _, _ in INTENDED_DEVIATIONS}
    assert not deviating & set(EXPRESSIONS)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_agrees_with_celpy(celpy_env: celpy.Environment, expression: str) -> None:
    assert our_matches(expression) == celpy_matches(celpy_env, expression)


@pytest.mark.parametrize(("expression", "reason", "expected"), INTENDED_DEVIATIONS)
def test_intended_deviations(
    celpy_env: celpy.Environment, expression: str, reason: str, expected: list[bool]
) -> None:
    ours = our_matches(expression)
    assert ours == expected, reason
    assert celpy_matches(celpy_env, expression) != ours, f"celpy no longer deviates: {reason}"


def test_corpus_exercises_both_outcomes() -> None:
    # A differential test where everything is False would prove little.
    outcomes = [result for expression in EXPRESSIONS for result in our_matches(expression)]
    assert 0.3 < sum(outcomes) / len(outcomes) < 0.7


def test_coexists_with_celpy_runners() -> None:
    """Our private parser must not disturb celpy's shared parser, in either order of first use."""
    celpy.CELParser.CEL_PARSER = None
    compiled_env = celpy.Environment(runner_class=celpy.CompiledRunner)
    assert compile_filter('user == "42"', VARIABLES).matches(SESSIONS[0])
    program = compiled_env.program(compiled_env.compile('user == "42"'))
    assert program.evaluate({"user": celtypes.StringType("42")}) == celtypes.BoolType(True)

    celpy.CELParser.CEL_PARSER = None
    interpreted_env = celpy.Environment()
    assert compile_filter('"news" in channels', VARIABLES).matches(SESSIONS[2])
    program = interpreted_env.program(interpreted_env.compile("1 + 1 == 2"))
    assert program.evaluate({}) == celtypes.BoolType(True)
    celpy.CELParser.CEL_PARSER = None
