"""A static upper bound of the work one expression does per connection, computed before it ever runs.

The unit is a *step*: evaluating one node once. The bound follows the shapes of values: a list literal has
a known length, ``channels`` at most the client channel limit, and lists or maps read from ``meta`` /
``info`` (whose sizes are only known at run time) count as ``DYNAMIC_SIZE`` elements. A comprehension costs
its target plus, per element, its predicate and transform; nested comprehensions therefore multiply.
Work done in C inside one node adds one step per ``C_STEP_ELEMENTS`` list elements (``in`` over a list,
concatenation, equality) or ``C_STEP_CHARS`` characters (string functions, RE2 matching) it may touch.

Where real data is larger than these estimates the runtime budget (see :class:`Meter`) still stops the
request; the estimate exists to refuse the hopeless cases before any shard starts on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nodes import (
    And,
    Binary,
    Call,
    Comprehension,
    Cond,
    Has,
    Ident,
    Index,
    ListLit,
    Lit,
    MapLit,
    Neg,
    Node,
    Not,
    Or,
    Select,
)

# Assumed size of a list, map or string whose size only the data knows (meta, info and their parts).
DYNAMIC_SIZE = 64
# Assumed length of a string variable (user, client, ...), and of channel names.
STRING_SIZE = 256
# Elements that code running in C compares (``in`` over a list, list equality, concatenation) in about
# the time of one evaluated node, and likewise characters that a string function scans.
C_STEP_ELEMENTS = 16
C_STEP_CHARS = 256


@dataclass(frozen=True, slots=True)
class Shape:
    """What is known of a value's size: ``size`` elements (or characters), each of shape ``elem``."""

    size: int
    elem: Shape | None = None


SCALAR = Shape(1)


def _dynamic(depth: int) -> Shape:
    # A value from meta/info may hold lists or maps nested up to the expression's own nesting; a chain of
    # DYNAMIC_SIZE shapes is enough, since each access goes one level down.
    shape = Shape(DYNAMIC_SIZE)
    for _ in range(depth):
        shape = Shape(DYNAMIC_SIZE, shape)
    return shape


def _join(a: Shape | None, b: Shape | None) -> Shape | None:
    """A shape bounding both ``a`` and ``b``."""
    if a is None or b is None:
        return a if b is None else b
    if a is b:
        return a
    return Shape(max(a.size, b.size), _join(a.elem, b.elem))


def _c_steps(left: Shape, right: Shape, size: int) -> int:
    # Shapes without elements are strings (or scalars); with elements, lists or maps.
    if left.elem is None and right.elem is None:
        return size // C_STEP_CHARS
    return size // C_STEP_ELEMENTS


class CostEstimator:
    """Walks a syntax tree once and returns (steps, shape) for every node."""

    def __init__(self, channels_size: int, dynamic_depth: int = 32) -> None:
        self._dynamic = _dynamic(dynamic_depth)
        self._globals = {
            "channels": Shape(channels_size, Shape(STRING_SIZE)),
            "meta": self._dynamic,
            "info": self._dynamic,
            "labels": self._dynamic,
        }
        self._locals: dict[str, list[Shape]] = {}

    def steps(self, root: Node) -> int:
        return self.estimate(root)[0]

    def estimate(self, node: Node) -> tuple[int, Shape]:
        if isinstance(node, Lit):
            return 1, _literal_shape(node.value)
        if isinstance(node, Ident):
            if node.local:
                return 1, self._locals[node.name][-1]
            return 1, self._globals.get(node.name, Shape(STRING_SIZE))
        if isinstance(node, Select | Index | Has):
            steps, shape = self.estimate(node.operand)
            if isinstance(node, Index):
                index_steps, _ = self.estimate(node.index)
                steps += index_steps
            if isinstance(node, Has):
                return steps + 1, SCALAR
            return steps + 1, shape.elem or self._dynamic
        if isinstance(node, And | Or):
            return 1 + sum(self.estimate(item)[0] for item in node.items), SCALAR
        if isinstance(node, Not | Neg):
            return 1 + self.estimate(node.operand)[0], SCALAR
        if isinstance(node, Cond):
            cond_steps, _ = self.estimate(node.cond)
            then_steps, then_shape = self.estimate(node.then)
            else_steps, else_shape = self.estimate(node.otherwise)
            return 1 + cond_steps + max(then_steps, else_steps), _join(then_shape, else_shape) or SCALAR
        if isinstance(node, Binary):
            return self._binary(node)
        if isinstance(node, ListLit):
            if all(isinstance(item, Lit) for item in node.items):
                # Folded into one constant at compile time.
                return 1, _literal_shape(tuple(item.value for item in node.items))  # type: ignore[union-attr]
            steps = 1
            elem: Shape | None = None
            for item in node.items:
                item_steps, item_shape = self.estimate(item)
                steps += item_steps
                elem = _join(elem, item_shape)
            return steps, Shape(len(node.items), elem)
        if isinstance(node, MapLit):
            steps = 1
            value: Shape | None = None
            for key, item in node.entries:
                steps += self.estimate(key)[0]
                item_steps, item_shape = self.estimate(item)
                steps += item_steps
                value = _join(value, item_shape)
            return steps, Shape(len(node.entries), value)
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, Comprehension):
            return self._comprehension(node)
        raise TypeError(f"no cost rule for {type(node).__name__}")  # pragma: no cover - nodes are closed

    def _binary(self, node: Binary) -> tuple[int, Shape]:
        left_steps, left = self.estimate(node.left)
        right_steps, right = self.estimate(node.right)
        steps = 1 + left_steps + right_steps
        if node.op == "+":
            # List concatenation and string concatenation copy both sides.
            size = left.size + right.size
            return steps + _c_steps(left, right, size), Shape(size, _join(left.elem, right.elem))
        if node.op == "in":
            return steps + right.size // C_STEP_ELEMENTS, SCALAR
        if node.op in ("==", "!="):
            # Comparing two lists or maps compares element by element.
            return steps + _c_steps(left, right, min(left.size, right.size)), SCALAR
        return steps, SCALAR

    def _call(self, node: Call) -> tuple[int, Shape]:
        steps = 1
        shapes: list[Shape] = []
        for operand in (node.target, *node.args) if node.target is not None else node.args:
            operand_steps, shape = self.estimate(operand)
            steps += operand_steps
            shapes.append(shape)
        if node.name in ("startsWith", "endsWith"):
            steps += shapes[-1].size // C_STEP_CHARS
        elif node.name != "size":
            # Other string functions (and RE2's linear matching) scan their operands once.
            steps += sum(shape.size for shape in shapes) // C_STEP_CHARS
        if node.name in ("lowerAscii", "upperAscii", "string", "dyn"):
            return steps, shapes[0]
        return steps, SCALAR

    def _comprehension(self, node: Comprehension) -> tuple[int, Shape]:
        target_steps, target = self.estimate(node.target)
        var_shape = target.elem or self._dynamic
        stack = self._locals.setdefault(node.var, [])
        stack.append(var_shape)
        try:
            pred_steps, pred_shape = self.estimate(node.pred)
            transform_steps, transform_shape = (
                self.estimate(node.transform) if node.transform is not None else (0, SCALAR)
            )
        finally:
            stack.pop()
        steps = 1 + target_steps + target.size * (1 + pred_steps + transform_steps)
        if node.macro == "filter":
            return steps, target
        if node.macro == "map":
            # map(x, t) has no separate transform: the predicate is the transform.
            produced = transform_shape if node.transform is not None else pred_shape
            return steps, Shape(target.size, produced)
        return steps, SCALAR


def _literal_shape(value: object) -> Shape:
    if isinstance(value, str):
        return Shape(len(value))
    if isinstance(value, tuple):
        elem: Shape | None = None
        for item in value:
            elem = _join(elem, _literal_shape(item))
        return Shape(len(value), elem)
    return SCALAR


def estimate_steps(root: Node, channels_size: int) -> int:
    """Upper bound of the steps evaluating ``root`` takes for one connection."""
    return CostEstimator(channels_size).steps(root)
