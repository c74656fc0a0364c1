"""The static cost estimate, the cost limit, the bracket pre-scan and the runtime meter of broker.cel."""

from __future__ import annotations

import operator
import time
from typing import Any

import pytest

from broker.cel import CONNECTION_VARIABLES, CelError, compile_filter
from broker.cel.cost import DYNAMIC_SIZE
from broker.cel.limits import DEFAULT_MAX_COST, bracket_depth

VARIABLES = {name: operator.attrgetter(name) for name in CONNECTION_VARIABLES}


class Session:
    __slots__ = CONNECTION_VARIABLES

    def __init__(self, **values: Any) -> None:
        defaults: dict[str, Any] = {name: "" for name in CONNECTION_VARIABLES}
        defaults.update(channels=[], meta={}, info={})
        defaults.update(values)
        for name, value in defaults.items():
            setattr(self, name, value)


def cost(expression: str, **kwargs: Any) -> int:
    return compile_filter(expression, VARIABLES, max_cost=10**15, **kwargs).cost


def int_list(n: int) -> str:
    return "[" + ", ".join(str(i) for i in range(n)) + "]"


# The expression of the report: two nested comprehensions over 900-element literals, 3.6 KB, within
# the length, depth, node and nesting limits, about 10**6 evaluations per connection.
ONES_900 = "[" + ",".join(["1"] * 900) + "]"
NESTED_900 = f"{ONES_900}.all(x, {ONES_900}.all(y, x == y))"


def nested(n: int) -> str:
    return f"{int_list(n)}.all(x, {int_list(n)}.all(y, x != y || x == y))"


def test_cheap_filters_cost_a_few_steps() -> None:
    assert cost('user == "42"') == 3
    assert cost('user == "42" && app_name == "web"') == 7
    assert cost('has(meta.region) && meta.region.startsWith("e")') < 20


def test_comprehension_multiplies_by_the_literal_length() -> None:
    small, large = cost(f"{int_list(10)}.exists(x, x == 3)"), cost(f"{int_list(100)}.exists(x, x == 3)")
    # Each element costs its predicate (3 steps) and the iteration itself; the literal is one constant.
    assert large - small == 90 * 4
    assert cost(nested(40)) > 40 * 40 * 4


def test_channels_scale_with_the_client_channel_limit() -> None:
    expression = 'channels.exists(c, c.startsWith("chat:"))'
    assert cost(expression, channels_size=1000) > 9 * cost(expression, channels_size=100)


def test_values_of_unknown_size_count_as_dynamic_size() -> None:
    per_element = cost("meta.roles.exists(r, r == 'x')") // DYNAMIC_SIZE
    assert 3 <= per_element <= 6
    # Two levels over meta data multiply.
    assert cost("meta.a.exists(x, meta.b.exists(y, x == y))") > DYNAMIC_SIZE**2


def test_lists_built_inside_comprehensions_keep_their_size() -> None:
    # Concatenating a bound variable with itself grows the list the inner macro walks.
    base = cost(f"[{int_list(50)}].all(x, x.all(y, y > 0))")
    grown = cost(f"[{int_list(50)}].all(x, (x + x + x + x).all(y, y > 0))")
    assert grown > 4 * (base - 50)
    mapped = cost(f"{int_list(50)}.map(x, {int_list(50)}).all(l, l.all(y, y > 0))")
    assert mapped > 50 * 50 * 3


def test_cost_limit_rejects_with_the_reason() -> None:
    with pytest.raises(
        CelError, match=r"expression too costly: estimated \d+ steps per connection, limit 2000"
    ):
        compile_filter(NESTED_900, VARIABLES)
    assert 3600 <= len(NESTED_900) <= 4096
    compile_filter(nested(10), VARIABLES)
    with pytest.raises(CelError, match="limit 100"):
        compile_filter(nested(10), VARIABLES, max_cost=100)


def test_costly_expression_is_rejected_before_it_runs() -> None:
    start = time.perf_counter()
    with pytest.raises(CelError, match="too costly"):
        compile_filter(NESTED_900, VARIABLES)
    # Compiling never evaluates the comprehensions (a full run takes seconds).
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "expression",
    [
        'channels.exists(c, c.startsWith("chat:"))',
        'channels.map(c, c + "!").exists(c, c == "news!")',
        'meta.roles.exists(r, r in ["admin", "dev", "ops"])',
        'channels.exists(c, ["a", "b", "c"].exists(x, c == x))',
        'user.matches("^4[0-9]$") || client.endsWith("-99") || "chat:1" in channels',
    ],
)
def test_usual_filters_are_within_the_default_limit(expression: str) -> None:
    assert cost(expression) <= DEFAULT_MAX_COST


def test_estimate_bounds_the_iterations_the_meter_counts() -> None:
    channels = [f"chat:{i}" for i in range(128)]
    session = Session(channels=channels, meta={"roles": [str(i) for i in range(DYNAMIC_SIZE)]})
    for expression in (
        'channels.exists(c, c == "none")',
        'channels.exists(c, ["a", "b", "c"].exists(x, c == x))',
        "meta.roles.map(r, r + r).all(r, size(r) > 0)",
        nested(12),
    ):
        flt = compile_filter(expression, VARIABLES)
        before = flt.meter.steps
        flt.matches(session)
        assert 0 < flt.meter.steps - before <= flt.cost


def test_meter_counts_data_larger_than_the_estimate() -> None:
    flt = compile_filter("meta.roles.exists(r, r == 'none')", VARIABLES)
    flt.matches(Session(meta={"roles": ["x"] * 10_000}))
    assert flt.meter.steps == 10_000 > flt.cost


# -- brackets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("user == '42'", 0),
        ("(user == '42')", 1),
        ("[[1], [2, [3]]] == {'a': (1)}", 3),
        ("user == '((((' && (client == \")\")", 1),
        ("user == '''((\n(''' || (((true)))", 3),
        ('user == "\\"((" || (true)', 1),
        ("user == '(", 0),  # unterminated: left to the parser
    ],
)
def test_bracket_depth(text: str, depth: int) -> None:
    assert bracket_depth(text) == depth


def test_deep_parentheses_are_rejected_before_parsing() -> None:
    text = "(" * 2000 + "user == '42'" + ")" * 2000
    start = time.perf_counter()
    with pytest.raises(CelError, match="2000 levels of brackets, limit is 32"):
        compile_filter(text, VARIABLES, max_length=10_000)
    assert time.perf_counter() - start < 0.1
    compile_filter("(" * 32 + "user == '42'" + ")" * 32, VARIABLES)
    with pytest.raises(CelError, match="33 levels"):
        compile_filter("(" * 33 + "user == '42'" + ")" * 33, VARIABLES)
