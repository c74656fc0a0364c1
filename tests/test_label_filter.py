"""label_filter: every operator, labels that are missing, and the filters refused."""

from __future__ import annotations

from typing import Any

import pytest

from broker.errors import ClientError
from broker.label_filter import MAX_DEPTH, MAX_NODES, compile_label_filter

LABELS = {"region": "eu-west", "tier": "gold", "cores": "8"}


def leaf(key: str, cmp: str, val: str = "", vals: list[str] | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"key": key, "cmp": cmp, "val": val}
    if vals is not None:
        node["vals"] = vals
    return node


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (leaf("tier", "eq", "gold"), True),
        (leaf("tier", "eq", "free"), False),
        (leaf("tier", "neq", "free"), True),
        (leaf("missing", "neq", "x"), True),  # a missing label differs from any value
        (leaf("missing", "eq", ""), False),
        (leaf("tier", "in", vals=["gold", "silver"]), True),
        (leaf("tier", "nin", vals=["gold"]), False),
        (leaf("missing", "nin", vals=["gold"]), True),
        (leaf("region", "ex"), True),
        (leaf("missing", "ex"), False),
        (leaf("missing", "nex"), True),
        (leaf("region", "sw", "eu-"), True),
        (leaf("region", "ew", "west"), True),
        (leaf("region", "ct", "-we"), True),
        (leaf("missing", "ct", ""), False),
        (leaf("cores", "gt", "4"), True),
        (leaf("cores", "gte", "8"), True),
        (leaf("cores", "lt", "8"), False),
        (leaf("cores", "lte", "8.0"), True),
        (leaf("tier", "gt", "1"), False),  # not a number: false, never an error
        ({"op": "and", "nodes": [leaf("tier", "eq", "gold"), leaf("cores", "gt", "4")]}, True),
        ({"op": "and", "nodes": [leaf("tier", "eq", "gold"), leaf("cores", "gt", "16")]}, False),
        ({"op": "or", "nodes": [leaf("tier", "eq", "free"), leaf("region", "sw", "eu")]}, True),
        ({"op": "not", "nodes": [leaf("tier", "eq", "gold")]}, False),
    ],
)
def test_operators(spec: dict[str, Any], expected: bool) -> None:
    assert compile_label_filter(spec)(LABELS) is expected
    assert compile_label_filter({"op": "not", "nodes": [spec]})(LABELS) is (not expected)


def deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = leaf("tier", "ex")
    for _ in range(levels):
        node = {"op": "not", "nodes": [node]}
    return node


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ([], "a node must be an object"),
        ({"op": "xor", "nodes": [leaf("a", "ex")]}, "unknown op"),
        ({"op": "and", "nodes": []}, "and needs nodes"),
        ({"op": "not", "nodes": [leaf("a", "ex"), leaf("b", "ex")]}, "exactly one node"),
        ({"cmp": "eq", "val": "x"}, "needs a key"),
        (leaf("a", "like", "x"), "unknown cmp"),
        (leaf("a", "in"), "needs vals"),
        ({"key": "a", "cmp": "eq", "val": 5}, "val must be a string"),
        (leaf("a", "gt", "many"), "numeric val"),
        (deep(MAX_DEPTH), "nested deeper"),
        ({"op": "or", "nodes": [leaf("a", "ex")] * MAX_NODES}, f"more than {MAX_NODES} nodes"),
        (leaf("a", "in", vals=["x"] * 2000), "more than 1024 vals"),
    ],
)
def test_malformed_filters_are_107_with_the_reason(spec: Any, reason: str) -> None:
    with pytest.raises(ClientError) as caught:
        compile_label_filter(spec)
    assert caught.value.code == 107 and reason in caught.value.message
