"""``label_filter``: a FilterNode over a connection's labels (Centrifugo v6 PRO), without I/O.

A node is either a comparison — ``op`` empty, ``key`` the label, ``cmp`` one of ``eq``, ``neq``, ``in``,
``nin`` (against ``vals``), ``ex``, ``nex`` (the label is there or not), ``sw``, ``ew``, ``ct`` (starts
with, ends with, contains), ``gt``, ``gte``, ``lt``, ``lte`` (numbers: both sides must parse as numbers,
otherwise the comparison is false) — or a combination: ``and`` / ``or`` over ``nodes``, ``not`` over
exactly one node. A comparison on a label the connection does not have is false, except ``neq``,
``nin`` and ``nex``.

:func:`compile_label_filter` checks a filter once and turns it into nested closures; anything malformed
(an unknown operator, a missing key, too deep or too large) is 107 with the reason. The limits bound the
work one connection costs whatever a request sends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from broker import errors

Labels = Mapping[str, str]
Match = Callable[[Labels], bool]

MAX_DEPTH = 16
MAX_NODES = 256
MAX_VALUES = 1024

_VALUE_CMPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda have, want: have == want,
    "sw": lambda have, want: have.startswith(want),
    "ew": lambda have, want: have.endswith(want),
    "ct": lambda have, want: want in have,
}
_NUMBER_CMPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda have, want: have > want,
    "gte": lambda have, want: have >= want,
    "lt": lambda have, want: have < want,
    "lte": lambda have, want: have <= want,
}


def compile_label_filter(spec: Any) -> Match:
    """The filter as a predicate over labels; raises 107 with the reason when it is malformed."""
    budget = [MAX_NODES]
    return _node(spec, 1, budget)


def _bad(reason: str) -> errors.ClientError:
    return errors.BAD_REQUEST.with_message(f"bad label_filter: {reason}")


def _node(spec: Any, depth: int, budget: list[int]) -> Match:
    if not isinstance(spec, dict):
        raise _bad("a node must be an object")
    if depth > MAX_DEPTH:
        raise _bad(f"nested deeper than {MAX_DEPTH}")
    budget[0] -= 1
    if budget[0] < 0:
        raise _bad(f"more than {MAX_NODES} nodes")
    op = spec.get("op") or ""
    if op in ("and", "or", "not"):
        nodes = spec.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise _bad(f"{op} needs nodes")
        if op == "not" and len(nodes) != 1:
            raise _bad("not takes exactly one node")
        parts = [_node(node, depth + 1, budget) for node in nodes]
        if op == "not":
            inner = parts[0]
            return lambda labels: not inner(labels)
        if op == "and":
            return lambda labels: all(part(labels) for part in parts)
        return lambda labels: any(part(labels) for part in parts)
    if op:
        raise _bad(f"unknown op {op!r}")
    return _comparison(spec)


def _comparison(spec: dict[str, Any]) -> Match:
    key, cmp = spec.get("key"), spec.get("cmp")
    if not isinstance(key, str) or not key:
        raise _bad("a comparison needs a key")
    if cmp == "ex":
        return lambda labels: key in labels
    if cmp == "nex":
        return lambda labels: key not in labels
    if cmp in ("in", "nin"):
        vals = spec.get("vals")
        if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
            raise _bad(f"{cmp} needs vals, a list of strings")
        if len(vals) > MAX_VALUES:
            raise _bad(f"more than {MAX_VALUES} vals")
        allowed = frozenset(vals)
        if cmp == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    val = spec.get("val", "")
    if not isinstance(val, str):
        raise _bad("val must be a string")
    if cmp == "neq":
        return lambda labels: labels.get(key) != val
    if cmp in _VALUE_CMPS:
        test = _VALUE_CMPS[cmp]
        return lambda labels: key in labels and test(labels[key], val)
    if cmp in _NUMBER_CMPS:
        want = _number(val)
        if want is None:
            raise _bad(f"{cmp} needs a numeric val")
        order = _NUMBER_CMPS[cmp]

        def compare(labels: Labels) -> bool:
            have = _number(labels.get(key))
            return have is not None and order(have, want)

        return compare
    raise _bad(f"unknown cmp {cmp!r}")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
