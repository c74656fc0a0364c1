"""CEL value semantics on plain Python values.

Values are what the variable getters return: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
lists (``list``, ``tuple``, ``set``, ``frozenset``) and maps (``dict`` or any ``Mapping``). These functions
implement the operators with CEL's rules rather than Python's where the two differ:

* ``bool`` is not a number: ``true == 1`` is false and ``true + 1`` is an error.
* ``int`` is 64-bit: results outside the range are an error. ``/`` truncates toward zero and ``%`` takes
  the sign of the dividend; division or modulo by zero is an error. ``1.0 / 0.0`` is IEEE infinity.
* Arithmetic never mixes types (``1 + 1.0`` is an error), but equality and ordering between ``int`` and
  ``double`` compare the numeric values (``1 == 1.0`` is true), as the current CEL specification says.
* Values of different types are unequal (not an error); ordering them is an error.
* ``x in list`` compares elements with CEL equality, ``x in map`` tests keys, anything else is an error
  (Python's ``in`` on a string would be a substring test).

Every failure raises :class:`CelEvalError` (or lets Python raise ``KeyError``/``TypeError`` where that
already means the same thing); callers never see these, they decide whether an expression matched.
The compiler inlines fast paths for the common exact types and falls back to these functions.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import re2

from .errors import CelEvalError

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Value kinds. Several Python types map onto one CEL type (tuple and set are lists, any Mapping is a map).
NULL, BOOL, INT, DOUBLE, STRING, BYTES, LIST, MAP = range(8)
KIND_NAMES = ("null", "bool", "int", "double", "string", "bytes", "list", "map")
_KINDS: dict[type, int] = {
    type(None): NULL,
    bool: BOOL,
    int: INT,
    float: DOUBLE,
    str: STRING,
    bytes: BYTES,
    list: LIST,
    tuple: LIST,
    set: LIST,
    frozenset: LIST,
    dict: MAP,
}
# Exact types for which Python's own operation already has CEL's meaning (used by inlined fast paths).
CONTAINER_TYPES = frozenset({list, tuple, set, frozenset, dict})
LIST_TYPES = frozenset({list, tuple, set, frozenset})
SIZED_TYPES = frozenset({str, bytes, list, tuple, set, frozenset, dict})
NUMBER_TYPES = frozenset({int, float})
_UNORDERED = (set, frozenset)


def kind(value: object) -> int:
    k = _KINDS.get(type(value))
    if k is not None:
        return k
    # Subclasses (str-based enums, OrderedDict, mappingproxy, ...). bool must be tested before int.
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes):
        return BYTES
    if isinstance(value, Mapping):
        return MAP
    if isinstance(value, (list, tuple, set, frozenset)):
        return LIST
    raise CelEvalError(f"unsupported value of type {type(value).__name__}")


def no_overload(op: str, *values: object) -> CelEvalError:
    kinds = ", ".join(_kind_name(v) for v in values)
    return CelEvalError(f"no matching overload for '{op}' applied to ({kinds})")


def _kind_name(value: object) -> str:
    try:
        return KIND_NAMES[kind(value)]
    except CelEvalError:
        return type(value).__name__


def check_int(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise CelEvalError("integer overflow")


# -- equality ----------------------------------------------------------------------------------------------


def eq(a: object, b: object) -> bool:
    ka = kind(a)
    kb = kind(b)
    if ka != kb:
        if (ka == INT and kb == DOUBLE) or (ka == DOUBLE and kb == INT):
            return bool(a == b)  # Python compares int and float exactly, without rounding the int.
        return False
    if ka == LIST:
        return _list_eq(a, b)  # type: ignore[arg-type]
    if ka == MAP:
        return _map_eq(a, b)  # type: ignore[arg-type]
    return bool(a == b)


def _list_eq(a: Iterable[Any], b: Iterable[Any]) -> bool:
    xs = a if isinstance(a, (list, tuple)) else list(a)
    ys = b if isinstance(b, (list, tuple)) else list(b)
    if len(xs) != len(ys):
        return False
    if isinstance(a, _UNORDERED) or isinstance(b, _UNORDERED):
        # A set has no order: compare as collections of the same size containing each other.
        return all(contains_value(ys, x) for x in xs) and all(contains_value(xs, y) for y in ys)
    return all(eq(x, y) for x, y in zip(xs, ys, strict=True))


def _map_eq(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        found, other = _lookup(b, key)
        if not found or not eq(value, other):
            return False
    return True


def contains_value(items: Iterable[Any], value: object) -> bool:
    return any(eq(value, item) for item in items)


# -- maps --------------------------------------------------------------------------------------------------


def _key_kind(key: object) -> int:
    k = kind(key)
    if k in (STRING, INT, BOOL, DOUBLE):
        return k
    raise CelEvalError(f"unsupported map key type {KIND_NAMES[k]}")


def _lookup(mapping: Mapping[Any, Any], key: object) -> tuple[bool, Any]:
    if type(key) is str:
        # A str key can only be equal to a str key, so the dict's own lookup is exact.
        if key in mapping:
            return True, mapping[key]
        return False, None
    kk = _key_kind(key)
    # Python would find an int key with True (1 == True); scan instead so bool only matches bool and
    # int/double keys match numerically.
    for candidate, value in mapping.items():
        ck = kind(candidate)
        comparable = ck == kk or (ck in (INT, DOUBLE) and kk in (INT, DOUBLE))
        if comparable and candidate == key:
            return True, value
    return False, None


def map_get(mapping: Mapping[Any, Any], key: object) -> Any:
    found, value = _lookup(mapping, key)
    if not found:
        raise CelEvalError(f"no such key: {key!r}")
    return value


def index(container: object, key: object) -> Any:
    k = kind(container)
    if k == MAP:
        return map_get(container, key)  # type: ignore[arg-type]
    if k == LIST and isinstance(container, (list, tuple)):
        ik = kind(key)
        if ik == DOUBLE and float(key).is_integer():  # type: ignore[arg-type]
            key = int(key)  # type: ignore[call-overload]
        elif ik != INT:
            raise no_overload("_[_]", container, key)
        i: int = key  # type: ignore[assignment]
        if 0 <= i < len(container):
            return container[i]
        raise CelEvalError(f"index out of range: {i}")
    raise no_overload("_[_]", container, key)


def has_field(value: object, field: str) -> bool:
    if type(value) is dict:
        return field in value
    if kind(value) == MAP:
        return _lookup(value, field)[0]  # type: ignore[arg-type]
    raise CelEvalError(f"type {_kind_name(value)} does not support field selection")


def in_(value: object, container: object) -> bool:
    k = kind(container)
    if k == LIST:
        if type(value) is str:
            return value in container  # type: ignore[operator]
        return contains_value(container, value)  # type: ignore[arg-type]
    if k == MAP:
        return _lookup(container, value)[0]  # type: ignore[arg-type]
    raise no_overload("@in", value, container)


def iterate(value: object) -> Iterable[Any]:
    """What a comprehension macro ranges over: list elements or map keys."""
    if type(value) in CONTAINER_TYPES or kind(value) in (LIST, MAP):
        return value  # type: ignore[return-value]
    raise no_overload("comprehension", value)


# -- ordering ----------------------------------------------------------------------------------------------

_ORDERED_KINDS = frozenset({BOOL, INT, DOUBLE, STRING, BYTES})


def _check_order(op: str, a: object, b: object) -> None:
    ka = kind(a)
    kb = kind(b)
    if ka == kb:
        if ka in _ORDERED_KINDS:
            return
    elif ka in (INT, DOUBLE) and kb in (INT, DOUBLE):
        return
    raise no_overload(op, a, b)


def lt(a: Any, b: Any) -> bool:
    _check_order("<", a, b)
    return bool(a < b)


def le(a: Any, b: Any) -> bool:
    _check_order("<=", a, b)
    return bool(a <= b)


def gt(a: Any, b: Any) -> bool:
    _check_order(">", a, b)
    return bool(a > b)


def ge(a: Any, b: Any) -> bool:
    _check_order(">=", a, b)
    return bool(a >= b)


# -- arithmetic --------------------------------------------------------------------------------------------


def _same_kind(op: str, a: object, b: object) -> int:
    ka = kind(a)
    if ka != kind(b):
        raise no_overload(op, a, b)
    return ka


def add(a: Any, b: Any) -> Any:
    k = _same_kind("+", a, b)
    if k == INT:
        return check_int(a + b)
    if k in (DOUBLE, STRING, BYTES):
        return a + b
    if k == LIST:
        return [*a, *b]
    raise no_overload("+", a, b)


def sub(a: Any, b: Any) -> Any:
    k = _same_kind("-", a, b)
    if k == INT:
        return check_int(a - b)
    if k == DOUBLE:
        return a - b
    raise no_overload("-", a, b)


def mul(a: Any, b: Any) -> Any:
    # Python's str * int and list * int repeat; CEL has no such overload, and kinds must match anyway.
    k = _same_kind("*", a, b)
    if k == INT:
        return check_int(a * b)
    if k == DOUBLE:
        return a * b
    raise no_overload("*", a, b)


def div(a: Any, b: Any) -> Any:
    k = _same_kind("/", a, b)
    if k == INT:
        if b == 0:
            raise CelEvalError("division by zero")
        # Python's // floors; CEL truncates toward zero.
        q = abs(a) // abs(b)
        return check_int(-q if (a < 0) != (b < 0) else q)
    if k == DOUBLE:
        if b == 0.0:
            if a == 0.0 or math.isnan(a):
                return math.nan
            return math.copysign(math.inf, math.copysign(1.0, a) * math.copysign(1.0, b))
        return a / b
    raise no_overload("/", a, b)


def mod(a: Any, b: Any) -> Any:
    k = _same_kind("%", a, b)
    if k == INT:
        if b == 0:
            raise CelEvalError("modulo by zero")
        if a == INT64_MIN and b == -1:
            raise CelEvalError("integer overflow")
        # Python's % takes the divisor's sign; CEL takes the dividend's.
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    raise no_overload("%", a, b)


def neg(a: Any) -> Any:
    k = kind(a)
    if k == INT:
        return check_int(-a)
    if k == DOUBLE:
        return -a
    raise no_overload("-_", a)


def not_(a: object) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise no_overload("!_", a)


# -- functions ---------------------------------------------------------------------------------------------


def size(value: object) -> int:
    if type(value) in SIZED_TYPES or kind(value) in (STRING, BYTES, LIST, MAP):
        return len(value)  # type: ignore[arg-type]
    raise no_overload("size", value)


def _strings(op: str, a: object, b: object) -> tuple[str, str]:
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    raise no_overload(op, a, b)


def starts_with(a: object, b: object) -> bool:
    s, prefix = _strings("startsWith", a, b)
    return s.startswith(prefix)


def ends_with(a: object, b: object) -> bool:
    s, suffix = _strings("endsWith", a, b)
    return s.endswith(suffix)


def contains(a: object, b: object) -> bool:
    s, part = _strings("contains", a, b)
    return part in s


_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def lower_ascii(a: object) -> str:
    # str.lower() would also fold non-ASCII letters; CEL's lowerAscii only maps A-Z.
    if isinstance(a, str):
        return a.translate(_LOWER)
    raise no_overload("lowerAscii", a)


def upper_ascii(a: object) -> str:
    if isinstance(a, str):
        return a.translate(_UPPER)
    raise no_overload("upperAscii", a)


class RegexError(Exception):
    """An RE2 pattern that does not compile; carries RE2's explanation."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # otherwise RE2 prints every bad pattern to stderr
_RE2_OPTIONS.never_capture = True  # only "is there a match" is needed
_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)
_NO_MATCH = (-1, -1)


def compile_regex(pattern: str) -> Callable[[str], bool]:
    """Compile an RE2 pattern into an unanchored search predicate (CEL ``matches`` semantics)."""
    try:
        regex = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as ex:
        detail = ex.args[0] if ex.args else "invalid pattern"
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RegexError(str(detail)) from None
    raw = getattr(regex, "_regexp", None)
    if raw is None or _UNANCHORED is None:  # pragma: no cover - other versions of the binding
        search = regex.search

        def portable_search(text: str) -> bool:
            return search(text) is not None

        return portable_search
    # The public search() builds a match object and maps byte offsets back to characters, which costs
    # about three times the matching itself; a filter only needs a yes/no answer.
    match = raw.Match
    anchor = _UNANCHORED

    def fast_search(text: str) -> bool:
        data = text.encode("utf-8")
        return bool(match(anchor, data, 0, len(data))[0] != _NO_MATCH)

    return fast_search


# Patterns that only become known at evaluation time (``user.matches(meta.pattern)``) are compiled on
# first use and kept in a small bounded cache shared by all filters.
_dynamic_regex: dict[str, Callable[[str], bool]] = {}
_dynamic_lock = threading.Lock()
_DYNAMIC_REGEX_LIMIT = 256


def matches(value: object, pattern: object) -> bool:
    s, p = _strings("matches", value, pattern)
    search = _dynamic_regex.get(p)
    if search is None:
        try:
            search = compile_regex(p)
        except RegexError as ex:
            raise CelEvalError(f"invalid regular expression: {ex}") from None
        with _dynamic_lock:
            if len(_dynamic_regex) >= _DYNAMIC_REGEX_LIMIT:
                _dynamic_regex.clear()
            _dynamic_regex[p] = search
    return search(s)


# -- conversions -------------------------------------------------------------------------------------------

_BOOL_STRINGS = {
    "1": True,
    "t": True,
    "T": True,
    "true": True,
    "TRUE": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "false": False,
    "FALSE": False,
    "False": False,
}


def to_int(value: object) -> int:
    k = kind(value)
    if k == INT:
        return int(value)  # type: ignore[call-overload,no-any-return]
    if k == DOUBLE:
        f = float(value)  # type: ignore[arg-type]
        # The range check is on the double: 2**63 itself is out of range.
        if math.isfinite(f) and -(2.0**63) <= f < 2.0**63:
            return check_int(int(f))  # int() truncates toward zero, as CEL does
        raise CelEvalError("double out of int range")
    if k == STRING:
        text = str(value)
        digits = text[1:] if text[:1] in ("+", "-") else text
        # Python's int() would also accept spaces, underscores and non-ASCII digits.
        if not (digits.isascii() and digits.isdigit()):
            raise CelEvalError(f"cannot convert {text!r} to int")
        return check_int(int(text, 10))
    raise no_overload("int", value)


def to_double(value: object) -> float:
    k = kind(value)
    if k in (INT, DOUBLE):
        return float(value)  # type: ignore[arg-type]
    if k == STRING:
        text = str(value)
        if not text.isascii() or "_" in text or text != text.strip():
            raise CelEvalError(f"cannot convert {text!r} to double")
        try:
            return float(text)
        except ValueError:
            raise CelEvalError(f"cannot convert {text!r} to double") from None
    raise no_overload("double", value)


def to_string(value: object) -> str:
    k = kind(value)
    if k == STRING:
        return str(value)
    if k == BOOL:
        return "true" if value else "false"
    if k == INT:
        return str(int(value))  # type: ignore[call-overload]
    if k == DOUBLE:
        # Python's shortest round-trip form (1.5, 1e+20, 100.0).
        return repr(float(value))  # type: ignore[arg-type]
    if k == BYTES:
        try:
            return bytes(value).decode("utf-8")  # type: ignore[call-overload,no-any-return]
        except UnicodeDecodeError:
            raise CelEvalError("bytes are not valid UTF-8") from None
    raise no_overload("string", value)


def to_bool(value: object) -> bool:
    k = kind(value)
    if k == BOOL:
        return bool(value)
    if k == STRING:
        result = _BOOL_STRINGS.get(str(value))
        if result is not None:
            return result
        raise CelEvalError(f"cannot convert {value!r} to bool")
    raise no_overload("bool", value)
