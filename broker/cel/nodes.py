"""The small syntax tree the compiler works on.

celpy's Lark tree has one node per grammar rule (ten wrapper levels around every literal) and left-recursive
chains for operators. :mod:`broker.cel.syntax` turns it into these nodes: wrappers and parentheses vanish,
``&&``/``||`` chains become one n-ary node, and macros (``has``, ``exists``, ...) are recognised. Pattern
matching for fast paths and index hints is then a matter of ``isinstance`` checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lit:
    """A constant: None, bool, int, float, str, or a tuple (constant list)."""

    value: object


@dataclass(frozen=True, slots=True)
class Ident:
    """A top-level variable (``local=False``) or a comprehension variable (``local=True``)."""

    name: str
    local: bool = False


@dataclass(frozen=True, slots=True)
class Select:
    """Field selection ``operand.field``; on a map this is a key lookup."""

    operand: Node
    field: str


@dataclass(frozen=True, slots=True)
class Index:
    """``operand[index]``."""

    operand: Node
    index: Node


@dataclass(frozen=True, slots=True)
class Call:
    """A function ``name(args)`` (``target`` is None) or a method ``target.name(args)``."""

    name: str
    target: Node | None
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Has:
    """The ``has(operand.field)`` macro: is ``field`` a key of the map ``operand``."""

    operand: Node
    field: str


@dataclass(frozen=True, slots=True)
class Comprehension:
    """``target.macro(var, pred)`` or ``target.map(var, pred, transform)`` (filter-then-map)."""

    macro: str
    target: Node
    var: str
    pred: Node
    transform: Node | None


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Node


@dataclass(frozen=True, slots=True)
class Cond:
    cond: Node
    then: Node
    otherwise: Node


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary operator: one of ``== != < <= > >= in + - * / %``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapLit:
    entries: tuple[tuple[Node, Node], ...]


Node = (
    Lit
    | Ident
    | Select
    | Index
    | Call
    | Has
    | Comprehension
    | And
    | Or
    | Not
    | Neg
    | Cond
    | Binary
    | ListLit
    | MapLit
)
