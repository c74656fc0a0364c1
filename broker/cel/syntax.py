"""From CEL text to the syntax tree of :mod:`broker.cel.nodes`.

Parsing uses celpy's Lark grammar through celpy's own :class:`celpy.CELParser`, but on a parser instance
private to this module. celpy keeps one process-wide parser in ``CELParser.CEL_PARSER`` and builds it with
the tree class of whichever runner asked first; resetting that global for our needs would break a celpy
``Environment`` created elsewhere in the process (and the other way round). So the private parser is built
once, with the global temporarily cleared, and the global is put back untouched afterwards.

The Lark tree is then converted by :class:`_Builder`. Everything that can be arbitrarily long in the input
(wrapper rules, parentheses, left-recursive operator chains, member chains, prefix operators) is walked
with loops, and real recursion happens only when descending into an operand, where the depth limit is
checked first. Deeply nested input therefore fails with a :class:`CelError` long before the Python stack
is at risk.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

import lark
from celpy.celparser import CELParser
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

from .errors import CelError
from .limits import Budget, Limits
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

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_parser: lark.Lark | None = None
_parser_lock = threading.Lock()

_RELATION_OPS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
}
_ADDITION_OPS = {"addition_add": "+", "addition_sub": "-"}
_MULTIPLICATION_OPS = {"multiplication_mul": "*", "multiplication_div": "/", "multiplication_mod": "%"}
# rule name -> (operator rule names of that precedence level)
_BINARY_LEVELS = {"relation": _RELATION_OPS, "addition": _ADDITION_OPS, "multiplication": _MULTIPLICATION_OPS}
# Rules that are a plain wrapper when they have a single child.
_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member"}
)

COMPREHENSION_MACROS = frozenset({"exists", "all", "exists_one", "filter", "map"})
# Global functions: name -> accepted argument counts.
GLOBAL_FUNCTIONS: dict[str, tuple[int, ...]] = {
    "size": (1,),
    "matches": (2,),
    "int": (1,),
    "double": (1,),
    "string": (1,),
    "bool": (1,),
    "dyn": (1,),
}
# Receiver-style functions: name -> accepted argument counts (excluding the receiver).
METHODS: dict[str, tuple[int, ...]] = {
    "size": (0,),
    "startsWith": (1,),
    "endsWith": (1,),
    "contains": (1,),
    "matches": (1,),
    "lowerAscii": (0,),
    "upperAscii": (0,),
}
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)


def _get_parser() -> lark.Lark:
    global _parser
    parser = _parser
    if parser is None:
        with _parser_lock:
            parser = _parser
            if parser is None:
                saved = CELParser.CEL_PARSER
                try:
                    CELParser.CEL_PARSER = None
                    CELParser(tree_class=lark.Tree)
                    parser = CELParser.CEL_PARSER
                finally:
                    CELParser.CEL_PARSER = saved
                if parser is None:  # pragma: no cover - celpy always builds one
                    raise CelError("CEL parser is unavailable")
                _parser = parser
    return parser


def parse(text: str) -> lark.Tree[Any]:
    """Parse CEL text into celpy's Lark tree; syntax errors become :class:`CelError`."""
    parser = _get_parser()
    try:
        return parser.parse(text)
    except UnexpectedEOF:
        raise CelError("syntax error: unexpected end of expression") from None
    except UnexpectedToken as ex:
        if ex.token.type == "$END":
            raise CelError("syntax error: unexpected end of expression") from None
        what = f"unexpected token {str(ex.token)!r}"
        raise CelError(_syntax_message(text, what, ex.line, ex.column)) from None
    except UnexpectedCharacters as ex:
        what = f"unexpected character {ex.char!r}"
        raise CelError(_syntax_message(text, what, ex.line, ex.column)) from None
    except LarkError as ex:
        first = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
        raise CelError(f"syntax error: {first}") from None


def _syntax_message(text: str, what: str, line: int, column: int) -> str:
    # One line of context with a caret, like the parser's own error display.
    lines = text.splitlines() or [text]
    source = lines[line - 1] if 0 < line <= len(lines) else text
    caret = " " * max(column - 1, 0) + "^"
    return f"syntax error at line {line}, column {column}: {what}\n  {source}\n  {caret}"


def build(tree: lark.Tree[Any], variables: Collection[str], limits: Limits) -> tuple[Node, int]:
    """Convert a Lark tree into :mod:`nodes`; returns the root and the node count."""
    builder = _Builder(variables, Budget(limits))
    root = builder.expr(tree, 1)
    return root, builder.budget.nodes


class _Builder:
    def __init__(self, variables: Collection[str], budget: Budget) -> None:
        self.variables = variables
        self.budget = budget
        # Comprehension variables in scope, innermost last.
        self.locals: list[str] = []

    # -- utilities -------------------------------------------------------------------------------------------

    def _mk(self, node: Node) -> Node:
        self.budget.node()
        return node

    def _unwrap(self, tree: lark.Tree[Any]) -> lark.Tree[Any]:
        """Skip single-child wrapper rules and parentheses (no semantic content)."""
        while True:
            data = tree.data
            children = tree.children
            if (data in _WRAPPERS and len(children) == 1) or data in ("primary", "paren_expr"):
                tree = children[0]
            else:
                return tree

    def _ident_name(self, tree: lark.Tree[Any]) -> str | None:
        """The identifier if ``tree`` is just a (possibly parenthesised) plain identifier."""
        tree = self._unwrap(tree)
        if tree.data == "ident":
            return str(tree.children[0])
        return None

    # -- expressions ---------------------------------------------------------------------------------------

    def expr(self, tree: lark.Tree[Any], depth: int) -> Node:
        self.budget.depth(depth)
        tree = self._unwrap(tree)
        data = tree.data
        children = tree.children
        if data == "expr":  # ternary: cond ? a : b
            return self._mk(
                Cond(
                    self.expr(children[0], depth + 1),
                    self.expr(children[1], depth + 1),
                    self.expr(children[2], depth + 1),
                )
            )
        if data == "conditionalor":
            return self._logical(tree, "conditionalor", depth, Or)
        if data == "conditionaland":
            return self._logical(tree, "conditionaland", depth, And)
        if data in _BINARY_LEVELS:
            return self._binary_chain(tree, _BINARY_LEVELS[data], depth)
        if data == "unary":
            return self._unary(tree, depth)
        if data in ("member_dot", "member_dot_arg", "member_index", "member_object"):
            return self._member(tree, depth)
        if data == "literal":
            return self._mk(Lit(_literal(children[0])))
        if data in ("ident", "dot_ident"):
            return self._ident(str(children[0]))
        if data in ("ident_arg", "dot_ident_arg"):
            return self._global_call(tree, depth)
        if data == "list_lit":
            items = self._exprlist(children[0], depth + 1) if children else ()
            return self._mk(ListLit(items))
        if data == "map_lit":
            entries: list[tuple[Node, Node]] = []
            if children:
                flat = children[0].children
                for i in range(0, len(flat), 2):
                    entries.append((self.expr(flat[i], depth + 1), self.expr(flat[i + 1], depth + 1)))
            return self._mk(MapLit(tuple(entries)))
        raise CelError(f"unsupported construct: {data}")  # pragma: no cover - grammar has no other rules

    def _exprlist(self, tree: lark.Tree[Any], depth: int) -> tuple[Node, ...]:
        return tuple(self.expr(child, depth) for child in tree.children)

    def _logical(self, tree: lark.Tree[Any], rule: str, depth: int, kind: type[And] | type[Or]) -> Node:
        # Left-recursive chain a || b || c: walk down the left spine iteratively.
        operands: list[lark.Tree[Any]] = []
        while tree.data == rule and len(tree.children) == 2:
            operands.append(tree.children[1])
            tree = tree.children[0]
        operands.append(tree)
        items: list[Node] = []
        for operand in reversed(operands):
            node = self.expr(operand, depth + 1)
            # (a && b) && c is the same chain as a && b && c.
            if isinstance(node, kind):
                items.extend(node.items)
            else:
                items.append(node)
        return self._mk(kind(tuple(items)))

    def _binary_chain(self, tree: lark.Tree[Any], ops: dict[str, str], depth: int) -> Node:
        rule = tree.data
        steps: list[tuple[str, lark.Tree[Any]]] = []
        while tree.data == rule and len(tree.children) == 2:
            op_tree, right = tree.children
            steps.append((ops[op_tree.data], right))
            tree = op_tree.children[0]
        # The chain nests len(steps) binary nodes; operands sit below all of them.
        self.budget.depth(depth + len(steps) - 1)
        operand_depth = depth + len(steps)
        node = self.expr(tree, operand_depth)
        for op, right in reversed(steps):
            node = self._mk(Binary(op, node, self.expr(right, operand_depth)))
        return node

    def _unary(self, tree: lark.Tree[Any], depth: int) -> Node:
        ops: list[str] = []
        while tree.data == "unary" and len(tree.children) == 2:
            ops.append(tree.children[0].data)
            tree = tree.children[1]
        self.budget.depth(depth + len(ops) - 1)
        node = self.expr(tree, depth + len(ops))
        for op in reversed(ops):
            node = self._mk(Not(node) if op == "unary_not" else Neg(node))
        return node

    def _member(self, tree: lark.Tree[Any], depth: int) -> Node:
        # member chains are left-recursive too: a.b[c].d(e). Collect the steps from the outside in.
        steps: list[lark.Tree[Any]] = []
        while tree.data in ("member_dot", "member_dot_arg", "member_index", "member_object"):
            steps.append(tree)
            tree = self._unwrap(tree.children[0])
        self.budget.depth(depth + len(steps) - 1)
        step_depth = depth + len(steps)
        steps.reverse()
        first = steps[0]
        if first.data == "member_dot_arg":
            # The receiver of a method call may be a namespace (``math.greatest(...)``), give a clear error.
            name = self._ident_name(tree)
            method = str(first.children[1])
            known = method in METHODS or method in COMPREHENSION_MACROS
            if name is not None and not known and name not in self.variables and name not in self.locals:
                raise CelError(f"unsupported function '{name}.{method}'")
        node = self.expr(tree, step_depth)
        for step in steps:
            data = step.data
            if data == "member_dot":
                node = self._mk(Select(node, str(step.children[1])))
            elif data == "member_index":
                node = self._mk(Index(node, self.expr(step.children[1], step_depth)))
            elif data == "member_dot_arg":
                node = self._method(node, step, step_depth)
            else:
                raise CelError("unsupported construct: message construction")
        return node

    def _method(self, target: Node, step: lark.Tree[Any], depth: int) -> Node:
        name = str(step.children[1])
        arg_trees = step.children[2].children if len(step.children) > 2 else []
        if name in COMPREHENSION_MACROS:
            return self._comprehension(name, target, arg_trees, depth)
        if name in METHODS:
            if len(arg_trees) not in METHODS[name]:
                raise CelError(f"wrong number of arguments for '{name}'")
            args = tuple(self.expr(arg, depth) for arg in arg_trees)
            return self._mk(Call(name, target, args))
        raise CelError(f"unsupported function '{name}'")

    def _comprehension(self, macro: str, target: Node, arg_trees: list[lark.Tree[Any]], depth: int) -> Node:
        allowed = (2, 3) if macro == "map" else (2,)
        if len(arg_trees) not in allowed:
            raise CelError(f"wrong number of arguments for '{macro}'")
        var = self._ident_name(arg_trees[0])
        if var is None:
            raise CelError(f"the first argument of '{macro}' must be a simple identifier")
        self.locals.append(var)
        try:
            Budget.comprehension(len(self.locals))
            pred = self.expr(arg_trees[1], depth)
            transform = self.expr(arg_trees[2], depth) if len(arg_trees) == 3 else None
        finally:
            self.locals.pop()
        return self._mk(Comprehension(macro, target, var, pred, transform))

    def _global_call(self, tree: lark.Tree[Any], depth: int) -> Node:
        name = str(tree.children[0])
        arg_trees = tree.children[1].children if len(tree.children) > 1 else []
        if name == "has":
            if len(arg_trees) != 1:
                raise CelError("wrong number of arguments for 'has'")
            arg = self._unwrap(arg_trees[0])
            if arg.data != "member_dot":
                raise CelError(
                    "invalid argument to has() macro: expected a field selection like has(meta.key)"
                )
            operand = self.expr(arg.children[0], depth + 1)
            return self._mk(Has(operand, str(arg.children[1])))
        if name in GLOBAL_FUNCTIONS:
            if len(arg_trees) not in GLOBAL_FUNCTIONS[name]:
                raise CelError(f"wrong number of arguments for '{name}'")
            args = tuple(self.expr(arg, depth + 1) for arg in arg_trees)
            return self._mk(Call(name, None, args))
        raise CelError(f"unsupported function '{name}'")

    def _ident(self, name: str) -> Node:
        if name in self.locals:
            return self._mk(Ident(name, local=True))
        if name in self.variables:
            return self._mk(Ident(name))
        if name in _TYPE_NAMES:
            raise CelError(f"unsupported: type value '{name}'")
        raise CelError(f"undeclared reference to '{name}'")


# -- literals ----------------------------------------------------------------------------------------------


def _literal(token: object) -> object:
    assert isinstance(token, lark.Token)
    kind = token.type
    text = str(token)
    if kind == "INT_LIT":
        return _int_literal(text)
    if kind == "FLOAT_LIT":
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise CelError(f"double literal out of range: {text}")
        return value
    if kind in ("STRING_LIT", "MLSTRING_LIT"):
        return _string_literal(text)
    if kind == "BOOL_LIT":
        return text == "true"
    if kind == "NULL_LIT":
        return None
    if kind == "UINT_LIT":
        raise CelError(f"unsupported: unsigned integer literal {text}")
    if kind == "BYTES_LIT":
        raise CelError("unsupported: bytes literal")
    raise CelError(f"unsupported literal {text!r}")  # pragma: no cover


def _int_literal(text: str) -> int:
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    value = int(digits[2:], 16) if digits[:2].lower() == "0x" else int(digits, 10)
    if negative:
        value = -value
    if not INT64_MIN <= value <= INT64_MAX:
        raise CelError(f"integer literal out of range: {text}")
    return value


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _string_literal(text: str) -> str:
    raw = text[0] in "rR"
    if raw:
        text = text[1:]
    quote_len = 3 if text[:3] in ('"""', "'''") else 1
    body = text[quote_len:-quote_len]
    if raw or "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            raise CelError("invalid escape at the end of a string literal")
        esc = body[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not set(digits) <= _HEX_DIGITS:
                raise CelError(f"invalid escape sequence \\{esc}{digits} in string literal")
            out.append(_code_point(int(digits, 16)))
            i += 2 + width
        elif esc.isdigit():
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or digits[0] not in "0123" or not set(digits) <= set("01234567"):
                raise CelError(f"invalid octal escape \\{digits} in string literal")
            out.append(_code_point(int(digits, 8)))
            i += 4
        else:
            raise CelError(f"invalid escape sequence \\{esc} in string literal")
    return "".join(out)


def _code_point(value: int) -> str:
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        raise CelError(f"invalid code point U+{value:X} in string literal")
    return chr(value)
