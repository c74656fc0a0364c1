"""Closure factories used by :mod:`broker.cel.compiler`.

Each factory takes already-compiled operands (callables ``ctx -> value``) and returns a new closure that
binds them as free variables. Keeping the factories at module level, rather than as methods of the
compiler, keeps the compiler object out of every closure's references and lets each closure body be a
short, flat piece of code: the type tests for the common exact types are inlined, and anything unusual
is handed to :mod:`broker.cel.runtime`, which implements CEL's rules in full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import runtime as rt
from .errors import CelEvalError

Fn = Callable[[Any], Any]

_NUMBER_TYPES = rt.NUMBER_TYPES
_CONTAINER_TYPES = rt.CONTAINER_TYPES
_SIZED_TYPES = rt.SIZED_TYPES
_INT64_MIN = rt.INT64_MIN
_INT64_MAX = rt.INT64_MAX
_STR_TYPES = frozenset({str})


class Cell:
    """Holds the current element of a comprehension loop."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


class Meter:
    """Counts comprehension iterations, the runtime measure of an expression's cost.

    One meter belongs to one compiled filter; a scan reads it before and after a run of evaluations
    (which never interleave with another scan's, since evaluation never awaits).
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps = 0


def eval_error(message: str) -> CelEvalError:
    return CelEvalError(message)


# -- paths, equality, membership ---------------------------------------------------------------------------


def path_getter(base: Fn, keys: tuple[str, ...]) -> Fn:
    if len(keys) == 1:
        (k0,) = keys

        def path1(ctx: Any) -> Any:
            return base(ctx)[k0]

        return path1
    if len(keys) == 2:
        k0, k1 = keys

        def path2(ctx: Any) -> Any:
            return base(ctx)[k0][k1]

        return path2

    def path_n(ctx: Any) -> Any:
        value = base(ctx)
        for key in keys:
            value = value[key]
        return value

    return path_n


def eq_const(operand: Fn, literal: Any, negate: bool) -> Fn:
    t = type(literal)
    if t is str:
        # str.__eq__ is only true for an equal str, which is exactly CEL's answer for any value.
        if negate:

            def ne_str(ctx: Any) -> Any:
                return operand(ctx) != literal

            return ne_str

        def eq_str(ctx: Any) -> Any:
            return operand(ctx) == literal

        return eq_str
    if t is bool or literal is None:
        # True, False and None are singletons and only equal themselves in CEL (true != 1).
        if negate:

            def is_not(ctx: Any) -> bool:
                return operand(ctx) is not literal

            return is_not

        def is_(ctx: Any) -> bool:
            return operand(ctx) is literal

        return is_
    eq = rt.eq
    if t is int or t is float:

        def eq_number(ctx: Any) -> bool:
            value = operand(ctx)
            if type(value) in _NUMBER_TYPES:
                return (value == literal) is not negate
            return eq(value, literal) is not negate

        return eq_number

    def eq_other(ctx: Any) -> bool:
        return eq(operand(ctx), literal) is not negate

    return eq_other


def path_eq_str(base: Fn, key: str, literal: str, negate: bool) -> Fn:
    # meta.tenant == "acme" in one closure: index and compare inline.
    if negate:

        def path_ne_str(ctx: Any) -> Any:
            return base(ctx)[key] != literal

        return path_ne_str

    def path_eq_str(ctx: Any) -> Any:
        return base(ctx)[key] == literal

    return path_eq_str


def literal_in_path(needle: str, base: Fn, key: str) -> Fn:
    # "admin" in meta.roles in one closure.
    in_ = rt.in_

    def literal_in_path(ctx: Any) -> bool:
        container = base(ctx)[key]
        if type(container) in _CONTAINER_TYPES:
            return needle in container
        return in_(needle, container)

    return literal_in_path


def string_set(value: Any) -> frozenset[str] | None:
    if type(value) is tuple and all(type(item) is str for item in value):
        return frozenset(value)
    return None


def plus(left: Fn, right: Fn) -> Fn:
    add = rt.add

    def plus(ctx: Any) -> Any:
        a = left(ctx)
        b = right(ctx)
        if type(a) is int and type(b) is int:
            c = a + b
            if _INT64_MIN <= c <= _INT64_MAX:
                return c
        return add(a, b)

    return plus


def minus(left: Fn, right: Fn) -> Fn:
    sub = rt.sub

    def minus(ctx: Any) -> Any:
        a = left(ctx)
        b = right(ctx)
        if type(a) is int and type(b) is int:
            c = a - b
            if _INT64_MIN <= c <= _INT64_MAX:
                return c
        return sub(a, b)

    return minus


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {"*": rt.mul, "/": rt.div, "%": rt.mod}
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
ORDER_GENERIC: dict[str, Callable[[Any, Any], bool]] = {"<": rt.lt, "<=": rt.le, ">": rt.gt, ">=": rt.ge}


def literal_order_types(literal: Any) -> frozenset[type] | None:
    t = type(literal)
    if t is int or t is float:
        return _NUMBER_TYPES
    if t is str:
        return _STR_TYPES
    return None


# Ordering against a literal: one factory per operator so the comparison itself is an inline operator.
def lt_const(operand: Fn, literal: Any, ok: frozenset[type]) -> Fn:
    def lt_const(ctx: Any) -> bool:
        value = operand(ctx)
        if type(value) in ok:
            return bool(value < literal)
        return rt.lt(value, literal)

    return lt_const


def le_const(operand: Fn, literal: Any, ok: frozenset[type]) -> Fn:
    def le_const(ctx: Any) -> bool:
        value = operand(ctx)
        if type(value) in ok:
            return bool(value <= literal)
        return rt.le(value, literal)

    return le_const


def gt_const(operand: Fn, literal: Any, ok: frozenset[type]) -> Fn:
    def gt_const(ctx: Any) -> bool:
        value = operand(ctx)
        if type(value) in ok:
            return bool(value > literal)
        return rt.gt(value, literal)

    return gt_const


def ge_const(operand: Fn, literal: Any, ok: frozenset[type]) -> Fn:
    def ge_const(ctx: Any) -> bool:
        value = operand(ctx)
        if type(value) in ok:
            return bool(value >= literal)
        return rt.ge(value, literal)

    return ge_const


ORDER_CONST_FACTORIES: dict[str, Callable[[Fn, Any, frozenset[type]], Fn]] = {
    "<": lt_const,
    "<=": le_const,
    ">": gt_const,
    ">=": ge_const,
}


def size_of(value: Any) -> int:
    if type(value) in _SIZED_TYPES:
        return len(value)
    return rt.size(value)


def size_call(operand: Fn) -> Fn:
    def size(ctx: Any) -> int:
        value = operand(ctx)
        if type(value) in _SIZED_TYPES:
            return len(value)
        return rt.size(value)

    return size


# size(x) compared with an int literal: the size is always an int, so the comparison is inline. Other
# literals (double, string) go through the generic function, which compares or reports the type error.
def size_lt(operand: Fn, literal: int) -> Fn:
    def size_lt(ctx: Any) -> bool:
        value = operand(ctx)
        return (len(value) if type(value) in _SIZED_TYPES else rt.size(value)) < literal

    return size_lt


def size_le(operand: Fn, literal: int) -> Fn:
    def size_le(ctx: Any) -> bool:
        value = operand(ctx)
        return (len(value) if type(value) in _SIZED_TYPES else rt.size(value)) <= literal

    return size_le


def size_gt(operand: Fn, literal: int) -> Fn:
    def size_gt(ctx: Any) -> bool:
        value = operand(ctx)
        return (len(value) if type(value) in _SIZED_TYPES else rt.size(value)) > literal

    return size_gt


def size_ge(operand: Fn, literal: int) -> Fn:
    def size_ge(ctx: Any) -> bool:
        value = operand(ctx)
        return (len(value) if type(value) in _SIZED_TYPES else rt.size(value)) >= literal

    return size_ge


SIZE_INT_FACTORIES: dict[str, Callable[[Fn, int], Fn]] = {
    "<": size_lt,
    "<=": size_le,
    ">": size_gt,
    ">=": size_ge,
}


def size_order(op: str) -> Callable[[Fn, Any], Fn]:
    generic = ORDER_GENERIC[op]
    int_factory = SIZE_INT_FACTORIES[op]

    def factory(operand: Fn, literal: Any) -> Fn:
        if type(literal) is int:
            return int_factory(operand, literal)

        def size_compare_generic(ctx: Any) -> bool:
            return generic(size_of(operand(ctx)), literal)

        return size_compare_generic

    return factory


SIZE_ORDER_FACTORIES = {op: size_order(op) for op in ("<", "<=", ">", ">=")}


def as_bool(fn: Fn, op: str) -> Fn:
    """A lone operand left of a simplified &&/||: it must still be a bool."""

    def checked(ctx: Any) -> bool:
        value = fn(ctx)
        if value is True or value is False:
            return value
        raise eval_error(f"no matching overload for '{op}'")

    return checked


def and2(a: Fn, b: Fn) -> Fn:
    def and2(ctx: Any) -> bool:
        # Evaluate both sides even after an error: false on either side wins over the error.
        try:
            x = a(ctx)
        except Exception:
            x = None
        if x is False:
            return False
        try:
            y = b(ctx)
        except Exception:
            y = None
        if y is False:
            return False
        if x is True and y is True:
            return True
        raise eval_error("error or non-bool operand in '&&'")

    return and2


def and_n(fns: tuple[Fn, ...]) -> Fn:
    def and_n(ctx: Any) -> bool:
        failed = False
        for fn in fns:
            try:
                value = fn(ctx)
            except Exception:
                failed = True
                continue
            if value is False:
                return False
            if value is not True:
                failed = True
        if failed:
            raise eval_error("error or non-bool operand in '&&'")
        return True

    return and_n


def or2(a: Fn, b: Fn) -> Fn:
    def or2(ctx: Any) -> bool:
        try:
            x = a(ctx)
        except Exception:
            x = None
        if x is True:
            return True
        try:
            y = b(ctx)
        except Exception:
            y = None
        if y is True:
            return True
        if x is False and y is False:
            return False
        raise eval_error("error or non-bool operand in '||'")

    return or2


def or_n(fns: tuple[Fn, ...]) -> Fn:
    def or_n(ctx: Any) -> bool:
        failed = False
        for fn in fns:
            try:
                value = fn(ctx)
            except Exception:
                failed = True
                continue
            if value is True:
                return True
            if value is not False:
                failed = True
        if failed:
            raise eval_error("error or non-bool operand in '||'")
        return False

    return or_n


def build_map(entries: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    seen: list[Any] = []
    for key, value in entries:
        if rt.kind(key) not in (rt.STRING, rt.INT, rt.BOOL):
            raise eval_error("unsupported map key type")
        # Python would merge True and 1 into one key; CEL keeps them apart, so reject the combination.
        if any(rt.kind(other) == rt.kind(key) and other == key for other in seen) or key in result:
            raise eval_error(f"duplicate or ambiguous map key {key!r}")
        seen.append(key)
        result[key] = value
    return result


STRING_METHODS: dict[str, Callable[[str, str], bool]] = {
    "startsWith": str.startswith,
    "endsWith": str.endswith,
    "contains": str.__contains__,
}
FUNCTIONS2: dict[str, Callable[[Any, Any], Any]] = {
    "startsWith": rt.starts_with,
    "endsWith": rt.ends_with,
    "contains": rt.contains,
}
FUNCTIONS1: dict[str, Callable[[Any], Any]] = {
    "lowerAscii": rt.lower_ascii,
    "upperAscii": rt.upper_ascii,
    "int": rt.to_int,
    "double": rt.to_double,
    "string": rt.to_string,
    "bool": rt.to_bool,
}


def string_method_const(operand: Fn, literal: str, name: str, method: Callable[[str, str], bool]) -> Fn:
    generic = FUNCTIONS2[name]
    if name == "startsWith":

        def starts_with(ctx: Any) -> Any:
            value = operand(ctx)
            if type(value) is str:
                return value.startswith(literal)
            return generic(value, literal)

        return starts_with
    if name == "endsWith":

        def ends_with(ctx: Any) -> Any:
            value = operand(ctx)
            if type(value) is str:
                return value.endswith(literal)
            return generic(value, literal)

        return ends_with

    def string_method(ctx: Any) -> Any:
        value = operand(ctx)
        if type(value) is str:
            return method(value, literal)
        return generic(value, literal)

    return string_method


# -- comprehension macros ----------------------------------------------------------------------------------


def iteration_items(value: Any) -> Any:
    if type(value) in _CONTAINER_TYPES:
        return value
    return rt.iterate(value)


def comprehension_all(target: Fn, cell: Cell, pred: Fn, transform: Fn | None, meter: Meter) -> Fn:
    def all_(ctx: Any) -> bool:
        failed = False
        items = iteration_items(target(ctx))
        meter.steps += len(items)
        for item in items:
            cell.value = item
            try:
                value = pred(ctx)
            except Exception:
                failed = True
                continue
            if value is False:
                return False
            if value is not True:
                failed = True
        if failed:
            raise eval_error("error or non-bool predicate in 'all'")
        return True

    return all_


def comprehension_exists(target: Fn, cell: Cell, pred: Fn, transform: Fn | None, meter: Meter) -> Fn:
    def exists(ctx: Any) -> bool:
        failed = False
        items = iteration_items(target(ctx))
        meter.steps += len(items)
        for item in items:
            cell.value = item
            try:
                value = pred(ctx)
            except Exception:
                failed = True
                continue
            if value is True:
                return True
            if value is not False:
                failed = True
        if failed:
            raise eval_error("error or non-bool predicate in 'exists'")
        return False

    return exists


def comprehension_exists_one(target: Fn, cell: Cell, pred: Fn, transform: Fn | None, meter: Meter) -> Fn:
    def exists_one(ctx: Any) -> bool:
        count = 0
        items = iteration_items(target(ctx))
        meter.steps += len(items)
        for item in items:
            cell.value = item
            value = pred(ctx)  # no error absorption in exists_one
            if value is True:
                count += 1
            elif value is not False:
                raise eval_error("non-bool predicate in 'exists_one'")
        return count == 1

    return exists_one


def comprehension_filter(target: Fn, cell: Cell, pred: Fn, transform: Fn | None, meter: Meter) -> Fn:
    def filter_(ctx: Any) -> list[Any]:
        result = []
        items = iteration_items(target(ctx))
        meter.steps += len(items)
        for item in items:
            cell.value = item
            value = pred(ctx)
            if value is True:
                result.append(item)
            elif value is not False:
                raise eval_error("non-bool predicate in 'filter'")
        return result

    return filter_


def comprehension_map(target: Fn, cell: Cell, pred: Fn, transform: Fn | None, meter: Meter) -> Fn:
    if transform is None:
        # Two-argument form: the second argument is the transform.
        mapper = pred

        def map_(ctx: Any) -> list[Any]:
            result = []
            items = iteration_items(target(ctx))
            meter.steps += len(items)
            for item in items:
                cell.value = item
                result.append(mapper(ctx))
            return result

        return map_

    produce = transform

    def filter_map(ctx: Any) -> list[Any]:
        result = []
        items = iteration_items(target(ctx))
        meter.steps += len(items)
        for item in items:
            cell.value = item
            value = pred(ctx)
            if value is True:
                result.append(produce(ctx))
            elif value is not False:
                raise eval_error("non-bool predicate in 'map'")
        return result

    return filter_map


COMPREHENSIONS: dict[str, Callable[[Fn, Cell, Fn, Fn | None, Meter], Fn]] = {
    "all": comprehension_all,
    "exists": comprehension_exists,
    "exists_one": comprehension_exists_one,
    "filter": comprehension_filter,
    "map": comprehension_map,
}
