"""Unit tests for broker.cel: CEL semantics, error absorption, index hints, limits and error messages."""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable
from typing import Any

import pytest

import broker.cel
from broker.cel import (
    CONNECTION_VARIABLES,
    NO_HINTS,
    CelError,
    CompiledFilter,
    IndexHints,
    compile_filter,
)


class Session:
    __slots__ = CONNECTION_VARIABLES

    def __init__(self, **values: Any) -> None:
        defaults: dict[str, Any] = {name: "" for name in CONNECTION_VARIABLES}
        defaults.update(channels=["chat:1", "news"], meta={"tenant": "acme", "age": 17}, info={})
        defaults.update(values)
        for name, value in defaults.items():
            setattr(self, name, value)


VARIABLES = {name: operator.attrgetter(name) for name in CONNECTION_VARIABLES}
SESSION = Session(user="42", client="c-1", app_name="terminal", transport="websocket")


def compile_(expression: str, **kwargs: Any) -> CompiledFilter:
    return compile_filter(expression, VARIABLES, **kwargs)


def matches(expression: str, session: Any = SESSION) -> bool:
    return compile_(expression).matches(session)


def check(expression: str, expected: bool, session: Any = SESSION) -> None:
    assert matches(expression, session) is expected, expression


# -- errors are not false ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        "meta.missing == 1",  # missing map key
        "user.field == 1",  # field selection on a string
        "channels.x == 1",  # field selection on a list
        "channels[5] == 1",  # index out of range
        "channels[-1] == 1",  # no negative indexing
        'meta["missing"] == 1',
        "1 / 0 == 1",
        "1 % 0 == 1",
        '"a" in "abc"',  # in on a string
        "1 in 5",
        "true + 1 == 2",
        "1 + 1.0 == 2.0",  # arithmetic does not mix int and double
        '"ab" * 2 == "abab"',  # no string repetition
        "[1] * 2 == [1, 1]",
        '"a" < 1',  # ordering across types
        "[1] < [2]",
        "null < null",
        "!user",  # ! needs a bool
        "user ? true : true",  # ternary condition must be bool
        "9223372036854775807 + 1 > 0",  # int64 overflow
        "-9223372036854775807 - 2 < 0",
        "9223372036854775807 * 2 > 0",
        "-(-9223372036854775808) > 0",
        "-9223372036854775808 / -1 > 0",
        "-9223372036854775808 % -1 == 0",
        "size(1) == 1",
        "user.startsWith(1)",
        'meta.age.startsWith("1")',
        'meta.age.matches("1")',
        'user.matches(meta.tenant + "(")',  # invalid pattern known only at run time
        "has(user.x)",  # has() on a non-map
        'int("1.5") == 1',
        'int(" 1") == 1',
        'int("1_000") == 1000',
        'int("99999999999999999999") > 0',
        "int(1e19) > 0",
        'double("1_0") == 10.0',
        'bool("yes")',
        'string(null) == "null"',
        "channels.all(c, c)",  # non-bool predicate
        "user.exists(c, true)",  # comprehension over a string
        "channels.exists_one(c, c.size())",
        "{true: 1, 1: 2}.size() == 2",  # ambiguous keys in Python
        '{"a": 1, "a": 2}.size() == 1',  # duplicate keys
        "{1.5: 1}.size() == 1",  # double keys are not allowed
        "{1: 2}[true] == 2",  # bool key does not find an int key
    ],
)
def test_errors_are_not_matched_even_when_negated(error: str) -> None:
    assert not matches(error)
    # Under ! an error stays an error: this distinguishes "error" from "false".
    assert not matches(f"!({error})")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("meta.missing == 1 || true", True),
        ("true || meta.missing == 1", True),
        ("meta.missing == 1 || false", False),
        ("false || meta.missing == 1", False),
        ("meta.missing == 1 && false", False),
        ("false && meta.missing == 1", False),
        ("meta.missing == 1 && true", False),
        ("true && meta.missing == 1", False),
        ("!(meta.missing == 1 && false)", True),
        ("!(false && meta.missing == 1)", True),
        ("!(meta.missing == 1 || true)", False),
        ("!(true || meta.missing == 1)", False),
        ("!(true && meta.missing == 1)", False),
        ("!(meta.missing == 1 || false)", False),
        # non-bool operands behave like errors
        ("1 || true", True),
        ("true || 1", True),
        ("1 && false", False),
        ("!(1 && true)", False),
        ("!(user && false)", True),
        # longer chains absorb from any position
        ("meta.a == 1 && meta.b == 2 && false", False),
        ("meta.a == 1 || meta.b == 2 || true", True),
        ("!(meta.a == 1 && true && true)", False),
        ("!(meta.a == 1 && true && false)", True),
        # errors inside folded constants are kept for evaluation time
        ("1 / 0 == 0 || true", True),
        ("!(1 / 0 == 0 || false)", False),
        ("false && 1 / 0 == 0 || true", True),
    ],
)
def test_error_absorption(expression: str, expected: bool) -> None:
    check(expression, expected)


def test_top_level_error_is_not_matched() -> None:
    compiled = compile_("meta.region == 'eu'")
    assert not compiled.matches(Session(meta={}))
    assert compiled.matches(Session(meta={"region": "eu"}))


# -- equality, membership, ordering --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("true == 1", False),
        ("1 == true", False),
        ("false == 0", False),
        ("true != 1", True),
        ("[true] == [1]", False),
        ("{'a': true} == {'a': 1}", False),
        ("meta.flag == 1", False),  # fast path with a bool value
        ("meta.flag == true", True),
        ("meta.one == true", False),  # fast path with an int value
        ("1 == 1.0", True),  # documented choice: numeric equality across int and double
        ("meta.one == 1.0", True),
        ("meta.half == 0.5", True),
        ("1 != 1.0", False),
        ("user == 42", False),  # different types are unequal, not an error
        ("!(user == 42)", True),
        ("null == null", True),
        ("meta.none == null", True),
        ("user == null", False),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [2, 1]", False),
        ("[1, [2]] == [1, [2]]", True),
        ("{'a': 1, 'b': [2]} == {'b': [2], 'a': 1}", True),
        ("{'a': 1} == {'a': 2}", False),
        ("{1: 'a'} == {1: 'a'}", True),
        ("{1: 'a'}[1] == 'a'", True),
        ("{1: 'a'}[1.0] == 'a'", True),
        ("channels == ['chat:1', 'news']", True),
    ],
)
def test_equality(expression: str, expected: bool) -> None:
    session = Session(meta={"flag": True, "one": 1, "half": 0.5, "none": None})
    check(expression, expected, session)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('"news" in channels', True),
        ('"nope" in channels', False),
        ('"tenant" in meta', True),  # map: key membership
        ('"acme" in meta', False),
        ("1 in [1, 2]", True),
        ("1.0 in [1, 2]", True),
        ("1 in [true]", False),
        ("true in [1]", False),
        ("[1] in [[1], [2]]", True),
        ("1 in {1: 'a'}", True),
        ("true in {1: 'a'}", False),
        ("user in ['41', '42']", True),
        ("user in ['41']", False),
        ("meta.age in [17, 18]", True),
        ("meta.age in ['17']", False),
    ],
)
def test_membership(expression: str, expected: bool) -> None:
    check(expression, expected)


def test_sets_and_tuples_behave_as_lists() -> None:
    for channels in (frozenset({"a", "b"}), {"a", "b"}, ("a", "b")):
        session = Session(channels=channels)
        check('"a" in channels', True, session)
        check("size(channels) == 2", True, session)
        check('channels.exists(c, c == "b")', True, session)
        check('channels == ["b", "a"] || channels == ["a", "b"]', True, session)
        check('channels + ["c"] == channels + ["c"]', True, session)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2.5", True),  # int vs double ordering compares values
        ("2.5 >= 3", False),
        ("meta.age < 17.5", True),
        ("17 < meta.age", False),  # literal on the left
        ("17 <= meta.age", True),
        ('"abc" < "abd"', True),
        ('user >= "4"', True),
        ("false < true", True),
        ("size(channels) > 1", True),
        ("size(channels) > 1.5", True),
        ("0 < size(channels)", True),
        ("size(channels) <= 1", False),
    ],
)
def test_ordering(expression: str, expected: bool) -> None:
    check(expression, expected)


# -- arithmetic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "7 / 2 == 3",
        "-7 / 2 == -3",  # truncation toward zero, not floor
        "7 / -2 == -3",
        "-7 / -2 == 3",
        "7 % 3 == 1",
        "-7 % 3 == -1",  # sign of the dividend
        "7 % -3 == 1",
        "-7 % -3 == -1",
        "meta.age / 5 == 3",
        "-meta.age / 5 == -3",
        "-meta.age % 5 == -2",
        "9223372036854775807 - 1 + 1 == 9223372036854775807",
        "-9223372036854775808 + 0 == -9223372036854775808",
        "0x10 == 16",
        "-0x10 == -16",
        "1.0 / 0.0 > 1e308",
        "-1.0 / 0.0 < -1e308",
        "0.5 + 0.25 == 0.75",
        "2.0 * 3.0 == 6.0",
        "2.0 - 3.0 == -1.0",
        '"ab" + "cd" == "abcd"',
        "[1] + [2, 3] == [1, 2, 3]",
        "channels + [] == channels",
        "-meta.age == -17",
        "- -3 == 3",
        "!!true",
        "1e3 == 1000.0",
    ],
)
def test_arithmetic(expression: str) -> None:
    check(expression, True)


def test_double_division_by_zero_is_nan_for_zero() -> None:
    check("0.0 / 0.0 == 0.0 / 0.0", False)  # NaN is not equal to itself
    check("!(0.0 / 0.0 < 1.0)", True)


# -- strings, size, conversions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('app_name.startsWith("term")', True),
        ('app_name.startsWith("web")', False),
        ('app_name.endsWith("nal")', True),
        ('app_name.contains("rmi")', True),
        ("app_name.contains(meta.tenant)", False),
        ("app_name.startsWith(app_name)", True),
        ('user.matches("^4[0-9]$")', True),
        ('user.matches("2")', True),  # unanchored search, not a full match
        ('user.matches("^2")', False),
        ("app_name.matches(meta.tenant)", False),  # pattern computed at run time
        ('matches(user, "^42$")', True),
        ('"café".matches("é")', True),
        ('"ÉCOLE".lowerAscii() == "École"', True),  # only A-Z are mapped
        ('"straße".upperAscii() == "STRAßE"', True),
        ('size("héllo") == 5', True),  # code points, not bytes
        ('"héllo".size() == 5', True),
        ("size(channels) == 2", True),
        ("size(meta) == 2", True),
        ("meta.size() == 2", True),
        ("size([]) == 0", True),
        ("size({}) == 0", True),
        ('"\\x41\\u00e9\\U0001F600\\101\\n" == "Aé😀A\\n"', True),
        ("r'\\n'.size() == 2", True),
        ("'''a\nb'''.size() == 3", True),
        ('"a\\"b".size() == 3', True),
    ],
)
def test_strings(expression: str, expected: bool) -> None:
    check(expression, expected)


@pytest.mark.parametrize(
    "expression",
    [
        'int("42") == 42',
        'int("-42") == -42',
        'int("+7") == 7',
        "int(2.9) == 2",
        "int(-2.9) == -2",
        "int(7) == 7",
        "double(3) == 3.0",
        'double("2.5") == 2.5',
        "double(1.5) == 1.5",
        'string(42) == "42"',
        'string(-1) == "-1"',
        'string(1.5) == "1.5"',
        'string("x") == "x"',
        'string(true) == "true"',
        'string(false) == "false"',
        'bool("true")',
        'bool("1")',
        '!bool("False")',
        "bool(true)",
        "dyn(1) == 1",
        "int(meta.age) + 1 == 18",
    ],
)
def test_conversions(expression: str) -> None:
    check(expression, True)


# -- has(), literals, indexing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("has(meta.tenant)", True),
        ("has(meta.region)", False),
        ("!has(meta.region)", True),
        ("has(meta.nested.x)", True),
        ("has(meta.nested.y)", False),
        ("has(meta.missing.x)", False),  # error: the operand does not exist
        ("!has(meta.missing.x)", False),
        ("has({'a': 1}.a)", True),
        ("meta.nested.x == 1", True),
        ("meta['nested']['x'] == 1", True),
        ("meta.nested['x'] == 1", True),
        ("meta.list[1] == 'b'", True),
        ("meta.list[1.0] == 'b'", True),
        ("meta.list[meta.nested.x] == 'b'", True),
        ("meta.list[2] == 'b'", False),
        ("[1, 2, 3][0] == 1", True),
        ("{'a': {'b': 2}}.a.b == 2", True),
        ("{'a': user}.a == '42'", True),
        ("{user: 1}['42'] == 1", True),
        ("[user, client] == ['42', 'c-1']", True),
        ("(user) == ('42')", True),
        ("((((user == '42'))))", True),
        (".user == '42'", True),  # leading dot: root namespace
    ],
)
def test_has_literals_and_indexing(expression: str, expected: bool) -> None:
    session = Session(
        user="42", client="c-1", meta={"tenant": "acme", "nested": {"x": 1}, "list": ["a", "b"]}
    )
    check(expression, expected, session)


# -- comprehension macros ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('channels.exists(c, c.startsWith("chat:"))', True),
        ('channels.exists(c, c == "x")', False),
        ("channels.all(c, c.size() > 3)", True),
        ('channels.all(c, c.startsWith("chat"))', False),
        ('channels.exists_one(c, c.contains(":"))', True),
        ("channels.exists_one(c, c.size() > 0)", False),
        ('channels.filter(c, c.startsWith("chat")) == ["chat:1"]', True),
        ('channels.map(c, c + "!") == ["chat:1!", "news!"]', True),
        ("channels.map(c, c.size() > 4, c.size()) == [6]", True),
        ("meta.exists(k, k == 'tenant')", True),  # maps iterate over their keys
        ("meta.all(k, k.size() > 2)", True),
        ("[1, 2, 3].filter(x, x % 2 == 1).map(x, x * 10) == [10, 30]", True),
        ("[[1, 2], [3]].exists(l, l.exists(x, x == 3))", True),
        ("[1, 2].all(x, [3, 4].all(y, y > x))", True),
        ("['a'].exists(user, user == 'a')", True),  # the macro variable shadows the top-level one
        ("['a'].exists(user, user == 'a') && user == '42'", True),
        ("[1, 2].exists(x, [x].exists(x, x == 2))", True),  # inner variable shadows the outer
        # error absorption in all/exists: a decisive element wins over an error elsewhere
        ("[0, 1].exists(x, 1 / x == 1)", True),
        ("[1, 0].all(x, 1 / x == 2)", False),
        ("!([1, 0].all(x, 1 / x == 1))", False),
        ("!([0, 2].exists(x, 1 / x == 1))", False),
        ("[].all(x, false)", True),
        ("[].exists(x, true)", False),
    ],
)
def test_macros(expression: str, expected: bool) -> None:
    check(expression, expected)


def test_comprehension_nesting_limit() -> None:
    compile_("[1].all(a, [1].all(b, a == b))")
    with pytest.raises(CelError, match="comprehension"):
        compile_("[1].all(a, [1].all(b, [1].all(c, a == c)))")


def test_macro_variable_must_be_an_identifier() -> None:
    with pytest.raises(CelError, match="simple identifier"):
        compile_("channels.exists(c.x, true)")
    with pytest.raises(CelError, match="number of arguments"):
        compile_("channels.exists(c)")


# -- index hints ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "hints"),
    [
        ('user == "42"', IndexHints(users=frozenset({"42"}))),
        ('"42" == user', IndexHints(users=frozenset({"42"}))),
        ('client == "c-1"', IndexHints(clients=frozenset({"c-1"}))),
        ('"chat:1" in channels', IndexHints(channels=frozenset({"chat:1"}))),
        (
            'user == "42" && client == "c-1" && "a" in channels && "b" in channels && meta.x == 1',
            IndexHints(users=frozenset({"42"}), clients=frozenset({"c-1"}), channels=frozenset({"a", "b"})),
        ),
        (
            '(user == "42" && meta.x == 1) && "a" in channels',
            IndexHints(users=frozenset({"42"}), channels=frozenset({"a"})),
        ),
        ('(user == "42")', IndexHints(users=frozenset({"42"}))),
        ('user in ["1", "2"] && size(channels) > 0', IndexHints(users=frozenset({"1", "2"}))),
        ('user in ["1", "2"] && user == "2"', IndexHints(users=frozenset({"2"}))),
        ('user == "1" && user == "2"', IndexHints(users=frozenset())),  # nothing can match
        ('app_name == "web" && meta.x == 1', IndexHints(app_names=frozenset({"web"}))),
        (
            'transport in ["sse", "http_stream"] && "web" == app_name',
            IndexHints(app_names=frozenset({"web"}), transports=frozenset({"sse", "http_stream"})),
        ),
        ('app_name == "a" || transport == "sse"', NO_HINTS),
        # not top-level conjuncts: no hints
        ('user == "42" || client == "c-1"', NO_HINTS),
        ('user == "42" || true', NO_HINTS),
        ('!(user == "42")', NO_HINTS),
        ('!("a" in channels)', NO_HINTS),
        ('user != "42"', NO_HINTS),
        ('meta.x == 1 ? user == "42" : false', NO_HINTS),
        ('(user == "42" || meta.x == 1) && client == "c"', IndexHints(clients=frozenset({"c"}))),
        ('["x"].exists(user, user == "x")', NO_HINTS),
        ("user == 42", NO_HINTS),
        ('user in ["1", 2]', NO_HINTS),
        ("user in meta.users", NO_HINTS),
        ('channels == ["a"]', NO_HINTS),
        ('"a" in meta.channels', NO_HINTS),
        ("user == client", NO_HINTS),
    ],
)
def test_hints(expression: str, hints: IndexHints) -> None:
    assert compile_(expression).hints == hints


def test_hints_are_consistent_with_matches() -> None:
    # A session outside the hinted candidates never matches.
    compiled = compile_('user == "42" && "news" in channels && meta.tenant == "acme"')
    hints = compiled.hints
    assert hints.users == frozenset({"42"}) and hints.channels == frozenset({"news"})
    assert compiled.matches(Session(user="42"))
    assert not compiled.matches(Session(user="43"))
    assert not compiled.matches(Session(user="42", channels=["chat:1"]))


# -- compile errors and limits -------------------------------------------------------------------------


def test_undeclared_reference() -> None:
    with pytest.raises(CelError) as err:
        compile_('usr == "42"')
    assert str(err.value) == "undeclared reference to 'usr'"
    with pytest.raises(CelError, match="undeclared reference to 'meta'"):
        compile_filter("meta.x == 1", {"user": VARIABLES["user"]})
    with pytest.raises(CelError, match="undeclared reference to 'c'"):
        compile_("channels.exists(c, true) && c == 1")  # macro variables do not leak


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ('user == "42" &&', "unexpected end of expression"),
        ('user == && client == "x"', "line 1, column 9: unexpected token '&&'"),
        ('user == "42" @ 1', "unexpected character '@'"),
        ("(user == '42'", "syntax error"),
        ("user ==\n  == 1", "line 2, column 3"),
        ('"unterminated', "syntax error"),
    ],
)
def test_syntax_errors(expression: str, fragment: str) -> None:
    with pytest.raises(CelError) as err:
        compile_(expression)
    assert fragment in str(err.value)
    assert str(err.value).startswith("syntax error")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("type(user) == string", "unsupported function 'type'"),
        (
            'timestamp("2024-01-01T00:00:00Z") > timestamp("2023-01-01T00:00:00Z")',
            "unsupported function 'timestamp'",
        ),
        ('duration("1s") > duration("0s")', "unsupported function 'duration'"),
        ("user == string", "unsupported: type value 'string'"),
        ("1u == 1", "unsupported: unsigned integer literal"),
        ('b"abc" == b"abc"', "unsupported: bytes literal"),
        ("Foo{a: 1}", "undeclared reference to 'Foo'"),
        ("meta{a: 1}", "message construction"),
        ("user.trim() == ''", "unsupported function 'trim'"),
        ("math.greatest(1, 2) == 2", "unsupported function 'math.greatest'"),
        ("frobnicate(user)", "unsupported function 'frobnicate'"),
        ("size(user, client) == 1", "wrong number of arguments for 'size'"),
        ("user.startsWith() ", "wrong number of arguments for 'startsWith'"),
        ("has(meta)", "invalid argument to has()"),
        ("has(meta['x'])", "invalid argument to has()"),
        ("9223372036854775808 > 0", "integer literal out of range"),
        ("1e999 > 0", "double literal out of range"),
        ('"\\q" == ""', "invalid escape sequence"),
        ('"\\ud800" == ""', "invalid code point"),
        ('"\\777" == ""', "invalid octal escape"),
        ("user.matches(1)", "string pattern"),
    ],
)
def test_unsupported_and_invalid(expression: str, fragment: str) -> None:
    with pytest.raises(CelError) as err:
        compile_(expression)
    assert fragment in str(err.value)


@pytest.mark.parametrize("pattern", ["(a", "a{2,1}", "(?<=a)b", "(a)\\1"])
def test_invalid_or_non_re2_regex_is_a_compile_error(pattern: str) -> None:
    # Look-behind and back-references are valid for Python's re but not RE2: proof that RE2 is used.
    with pytest.raises(CelError, match="invalid regular expression"):
        compile_(f"user.matches({pattern!r})")


def test_pathological_regex_is_linear() -> None:
    # Catastrophic backtracking for a backtracking engine; RE2 answers immediately.
    session = Session(user="a" * 5000 + "!")
    check('user.matches("^(a+)+$")', False, session)


@pytest.mark.parametrize("expression", ["", " ", "\n\t ", "// just a comment"])
def test_empty_expression(expression: str) -> None:
    with pytest.raises(CelError):
        compile_(expression)


def test_non_string_expression() -> None:
    with pytest.raises(CelError, match="must be a string"):
        compile_filter(None, VARIABLES)  # type: ignore[arg-type]


def test_length_limit() -> None:
    expression = 'user == "' + "x" * 100 + '"'
    compile_(expression, max_length=len(expression))
    with pytest.raises(CelError, match="too long"):
        compile_(expression, max_length=len(expression) - 1)
    with pytest.raises(CelError, match="too long"):
        compile_("user == 'a' || " * 400 + "true")


def test_depth_limit() -> None:
    compile_("-" * 30 + "1 == 1")
    with pytest.raises(CelError, match="nested too deeply"):
        compile_("!" * 40 + "true")
    with pytest.raises(CelError, match="nested too deeply"):
        compile_("[" * 40 + "]" * 40 + " == []")
    with pytest.raises(CelError, match="nested too deeply"):
        compile_(" + ".join(["1"] * 40) + " == 40")
    with pytest.raises(CelError, match="nested too deeply"):
        compile_("size(" * 40 + "user" + ")" * 40 + " > 0")
    with pytest.raises(CelError, match="nested too deeply"):
        compile_("[1, [2]] == [1, [2]]", max_depth=3)
    # && chains are flat; parentheses add no node but are counted before parsing (see test_cel_cost.py).
    compile_("(" * 30 + "user == '42'" + ")" * 30)
    with pytest.raises(CelError, match="300 levels of brackets, limit is 32"):
        compile_("(" * 300 + "user == '42'" + ")" * 300)
    compile_(" && ".join(["user == '42'"] * 200))


def test_node_limit() -> None:
    expression = " || ".join(f'user == "{i}"' for i in range(100))
    compile_(expression)
    with pytest.raises(CelError, match="too complex"):
        compile_(expression, max_nodes=250)
    with pytest.raises(CelError, match="too complex"):
        compile_("[" + ", ".join(["1"] * 2500) + "] == []", max_length=10_000)


def test_recursion_error_becomes_cel_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(broker.cel, "compile_tree", explode)
    with pytest.raises(CelError, match="nested too deeply"):
        compile_("user == '42'")


# -- matches() never raises ----------------------------------------------------------------------------


class Exploding:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("getter failed")


WEIRD_SESSIONS = [
    None,
    object(),
    Exploding(),
    Session(meta=None, info=None, channels=None, user=None, client=None),
    Session(meta=[], info="x", channels="chat:1", user=42, client=1.5),
    Session(meta="tenant", channels={"chat:1": 1}, user=True),
    Session(meta={"tenant": object(), "age": float("nan"), "roles": [object()]}, channels=[None, 1, ["x"]]),
    Session(meta={1: "a", 2.5: "b", None: "c", (1,): "d"}, channels=(1, 2)),
    Session(meta={"tenant": {"deep": [{"x": 1}]}}, app_name=b"bytes", transport=["list"]),
]
ROBUSTNESS_EXPRESSIONS = [
    'user == "42"',
    '"chat:1" in channels',
    'meta.tenant == "acme" && size(channels) > 0',
    'app_name.startsWith("term") || transport == "uni_sse"',
    "has(meta.tenant) && meta.tenant.size() > 0",
    'user.matches("^4") || client.endsWith("-1")',
    "meta.age > 17 || meta.age == 17.0",
    'channels.exists(c, c == "chat:1") || meta.roles.all(r, r == "x")',
    "channels[0] == 1 || meta[1] == 'a' || meta[true] == 'b'",
    "user + client == 'x' || -meta.age < 0 || meta.age / 2 == 1",
    "int(user) > 1 || double(client) > 1.0 || string(meta) == ''",
    "size(user) + size(meta) + size(channels) > 0",
    "channels == [] || meta == {} || user in ['a']",
    "app_name.lowerAscii() == 'x' || 'chat:1' in meta",
    "meta.tenant.deep[0].x == 1",
]


@pytest.mark.parametrize("expression", ROBUSTNESS_EXPRESSIONS)
def test_matches_never_raises(expression: str) -> None:
    compiled = compile_(expression)
    for session in WEIRD_SESSIONS:
        assert compiled.matches(session) in (True, False)


def test_getters_can_normalise_values() -> None:
    variables: dict[str, Callable[[Any], Any]] = {**VARIABLES, "meta": lambda s: s.meta or {}}
    compiled = compile_filter("size(meta) == 0 && !has(meta.tenant)", variables)
    assert compiled.matches(Session(meta=None))
    assert not compiled.matches(Session(meta={"tenant": "acme"}))


def test_deep_value_from_getter() -> None:
    value: Any = "leaf"
    for _ in range(5000):
        value = {"x": value}
    compiled = compile_("meta == meta")
    assert compiled.matches(Session(meta={"x": 1}))
    assert compiled.matches(Session(meta=value)) in (True, False)


def test_concurrent_use_without_macros() -> None:
    compiled = compile_('meta.tenant == "acme" && user.matches("^4")')
    errors: list[bool] = []

    def worker() -> None:
        for i in range(2000):
            expected = i % 2 == 0
            session = Session(user="42" if expected else "7")
            if compiled.matches(session) is not expected:
                errors.append(True)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# -- public API ----------------------------------------------------------------------------------------


def test_public_api() -> None:
    compiled = compile_('user == "42"')
    assert compiled.expression == 'user == "42"'
    assert isinstance(compiled.hints, IndexHints)
    assert "user" in repr(compiled)
    assert issubclass(CelError, ValueError)
    assert CONNECTION_VARIABLES == (
        "user",
        "client",
        "session",
        "app_name",
        "app_version",
        "transport",
        "protocol",
        "channels",
        "meta",
        "info",
        "labels",
        "connected_at_ms",
        "ping_pong_latency_ms",
    )
    with pytest.raises(AttributeError):
        compiled.hints.users = frozenset()  # type: ignore[misc]


def test_constant_expressions() -> None:
    assert compile_("true").matches(None)
    assert not compile_("false").matches(None)
    assert not compile_("1").matches(None)
    assert not compile_("'true'").matches(None)
    assert compile_("1 + 2 * 3 == 7").matches(None)
    assert compile_("true ? true : 1 / 0 == 0").matches(None)
    assert not compile_("1 / 0 == 0 ? true : true").matches(None)
