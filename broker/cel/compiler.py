"""Compile CEL syntax trees into nested Python closures.

Theory of operation
-------------------

The connections API evaluates one filter against every live session of a shard, so evaluation cost is
what matters; compilation happens once per request. celpy's evaluators cost 20-130 µs per evaluation
plus the cost of converting each session into celpy values, which is far too slow for scans over tens of
thousands of sessions. This module instead turns the expression into a tree of small Python closures,
each of which takes the session object (``ctx``) and returns a plain Python value:

1. :mod:`broker.cel.syntax` parses the text with celpy's Lark grammar and builds a compact syntax tree
   (:mod:`broker.cel.nodes`), enforcing the limits of :mod:`broker.cel.limits`.
2. :class:`_Compiler` walks that tree once and returns one closure per node. No user text is ever passed
   to ``eval``/``exec``/``compile``; the only code that runs is the fixed set of closure bodies below.
3. Top-level variables compile to the caller's getter itself (``operator.attrgetter("user")``), so no
   activation dict is built per session.
4. A CEL runtime error is a Python exception. ``&&``, ``||`` and the ``all``/``exists`` macros catch it to
   implement CEL's commutative error absorption (``error && false`` is ``false``); anything that reaches
   the top is "not matched" (see :meth:`broker.cel.CompiledFilter.matches`). Hot paths therefore do not
   need to pre-check anything that Python already rejects: ``meta["region"]`` on a missing key raises
   ``KeyError``, on a list or a string ``TypeError``, and both simply mean "CEL error".

Fast paths
----------

Generic operators call the functions of :mod:`broker.cel.runtime`, which classify values and apply CEL's
rules. The common filter shapes are fused into single closures (built by :mod:`broker.cel.closures`)
that test the exact Python type inline and fall back to the generic function only for unusual values:

* paths ``ident(.field | ["key"])*`` become one getter that indexes repeatedly;
* ``path == "literal"`` is a plain Python ``==`` (a ``str`` can only equal a ``str``, so Python's and
  CEL's answers agree for every value), ``== true``/``== null`` become identity tests, numeric literals
  test ``type(x) in (int, float)`` first (excluding ``bool``, which CEL does not treat as a number);
  for a one-step path such as ``meta.tenant`` the indexing is inlined into the same closure;
* ``"literal" in path`` uses Python's ``in`` when the container is an exact list/tuple/set/dict, and
  ``path in ["a", "b"]`` tests a precomputed frozenset;
* comparisons with a numeric or string literal, ``size(...)`` compared with a literal, and the string
  methods with a literal argument inline the type test;
* ``x.matches("literal")`` compiles the RE2 pattern at compile time (a bad pattern is a compile error)
  and memoizes results per input string, since many sessions share values such as ``app_name``;
* ``&&``/``||`` chains are flattened into tuples, with an unrolled version for two operands;
* sub-expressions without variables are folded to constants at compile time when they evaluate without
  error (an error is left in place so that it happens, and can be absorbed, at evaluation time).

Comprehension variables (``channels.exists(c, ...)``) live in a per-macro cell that the loop writes
before calling the predicate, instead of being copied into an activation. A consequence is that one
:class:`~broker.cel.CompiledFilter` that uses comprehension macros must not be evaluated by several
threads at the same time; filters without macros are stateless apart from the bounded regex memo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import closures as cl
from . import runtime as rt
from .errors import CelError
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

Fn = cl.Fn

_CONTAINER_TYPES = rt.CONTAINER_TYPES
_REGEX_MEMO_LIMIT = 16384


def compile_tree(root: Node, variables: Mapping[str, Fn], meter: cl.Meter | None = None) -> Fn:
    """Compile a syntax tree; the result raises on CEL errors (callers decide what that means).

    Comprehensions add the length of every list or map they iterate to ``meter``.
    """
    return _Compiler(variables, meter or cl.Meter()).compile(root)


class _Compiler:
    def __init__(self, variables: Mapping[str, Fn], meter: cl.Meter) -> None:
        self.variables = variables
        self.meter = meter
        # Comprehension variable name -> stack of cells (inner macros may reuse a name).
        self.cells: dict[str, list[cl.Cell]] = {}
        # Closures known to return a constant, with that constant.
        self.consts: dict[Fn, Any] = {}
        # Single-step path closures (``meta.tenant``) -> (base getter, key), so that the hottest shapes
        # can index inline instead of calling the path closure.
        self.paths: dict[Fn, tuple[Fn, str]] = {}

    # -- constants -----------------------------------------------------------------------------------------

    def const(self, value: Any) -> Fn:
        def constant(ctx: Any) -> Any:
            return value

        self.consts[constant] = value
        return constant

    def fold(self, fn: Fn, *children: Fn) -> Fn:
        """Replace ``fn`` by a constant when all its inputs are constants and it evaluates cleanly."""
        if all(child in self.consts for child in children):
            try:
                value = fn(None)
            except Exception:
                return fn
            return self.const(value)
        return fn

    # -- dispatch ------------------------------------------------------------------------------------------

    def compile(self, node: Node) -> Fn:
        if isinstance(node, Lit):
            return self.const(node.value)
        if isinstance(node, Ident):
            return self.ident(node)
        if isinstance(node, (Select, Index)):
            return self.member(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, And):
            return self.logical(node.items, conjunction=True)
        if isinstance(node, Or):
            return self.logical(node.items, conjunction=False)
        if isinstance(node, Not):
            return self.not_(node)
        if isinstance(node, Neg):
            operand = self.compile(node.operand)
            neg = rt.neg

            def negate(ctx: Any) -> Any:
                return neg(operand(ctx))

            return self.fold(negate, operand)
        if isinstance(node, Cond):
            return self.cond(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Has):
            return self.has(node)
        if isinstance(node, Comprehension):
            return self.comprehension(node)
        if isinstance(node, ListLit):
            return self.list_lit(node)
        if isinstance(node, MapLit):
            return self.map_lit(node)
        raise CelError(f"unsupported construct: {type(node).__name__}")  # pragma: no cover

    def ident(self, node: Ident) -> Fn:
        if node.local:
            cell = self.cells[node.name][-1]

            def local(ctx: Any) -> Any:
                return cell.value

            return local
        return self.variables[node.name]

    # -- member access -------------------------------------------------------------------------------------

    def member(self, node: Select | Index) -> Fn:
        # Collect the longest run of string-keyed steps: meta.a["b"].c is one getter.
        keys: list[str] = []
        current: Node = node
        while True:
            if isinstance(current, Select):
                keys.append(current.field)
                current = current.operand
            elif (
                isinstance(current, Index)
                and isinstance(current.index, Lit)
                and type(current.index.value) is str
            ):
                keys.append(current.index.value)
                current = current.operand
            else:
                break
        if not keys:
            assert isinstance(current, Index)
            return self.index(current)
        keys.reverse()
        base = self.compile(current)
        path = cl.path_getter(base, tuple(keys))
        if len(keys) == 1 and base not in self.consts:
            self.paths[path] = (base, keys[0])
        return self.fold(path, base)

    def index(self, node: Index) -> Fn:
        operand = self.compile(node.operand)
        key = self.compile(node.index)
        index = rt.index
        if key in self.consts and type(self.consts[key]) is int:
            position: int = self.consts[key]

            def index_const(ctx: Any) -> Any:
                container = operand(ctx)
                t = type(container)
                if (t is list or t is tuple) and 0 <= position < len(container):
                    return container[position]
                return index(container, position)

            return self.fold(index_const, operand)

        def index_any(ctx: Any) -> Any:
            return index(operand(ctx), key(ctx))

        return self.fold(index_any, operand, key)

    def has(self, node: Has) -> Fn:
        operand = self.compile(node.operand)
        field = node.field
        has_field = rt.has_field

        def has(ctx: Any) -> bool:
            value = operand(ctx)
            if type(value) is dict:
                return field in value
            return has_field(value, field)

        return self.fold(has, operand)

    # -- operators -----------------------------------------------------------------------------------------

    def binary(self, node: Binary) -> Fn:
        op = node.op
        if op in ("==", "!="):
            return self.equality(node, negate=op == "!=")
        if op == "in":
            return self.membership(node)
        if op in cl.ORDER_OPS:
            return self.ordering(node)
        left = self.compile(node.left)
        right = self.compile(node.right)
        if op == "+":
            fn = cl.plus(left, right)
        elif op == "-":
            fn = cl.minus(left, right)
        else:
            generic = cl.ARITHMETIC[op]

            def arithmetic(ctx: Any) -> Any:
                return generic(left(ctx), right(ctx))

            fn = arithmetic
        return self.fold(fn, left, right)

    def equality(self, node: Binary, *, negate: bool) -> Fn:
        left = self.compile(node.left)
        right = self.compile(node.right)
        if left in self.consts and right not in self.consts:
            # Equality is symmetric; put the literal on the right.
            left, right = right, left
        if right in self.consts and left not in self.consts:
            literal = self.consts[right]
            if left in self.paths and type(literal) is str:
                fn = cl.path_eq_str(*self.paths[left], literal, negate)
            else:
                fn = cl.eq_const(left, literal, negate)
        else:
            eq = rt.eq
            if negate:

                def not_equal(ctx: Any) -> bool:
                    return not eq(left(ctx), right(ctx))

                fn = not_equal
            else:

                def equal(ctx: Any) -> bool:
                    return eq(left(ctx), right(ctx))

                fn = equal
        return self.fold(fn, left, right)

    def membership(self, node: Binary) -> Fn:
        left = self.compile(node.left)
        right = self.compile(node.right)
        in_ = rt.in_
        fn: Fn
        if left in self.consts and type(self.consts[left]) is str and right not in self.consts:
            needle: str = self.consts[left]
            if right in self.paths:
                fn = cl.literal_in_path(needle, *self.paths[right])
            else:

                def literal_in(ctx: Any) -> bool:
                    container = right(ctx)
                    if type(container) in _CONTAINER_TYPES:
                        return needle in container
                    return in_(needle, container)

                fn = literal_in
        elif right in self.consts and left not in self.consts:
            haystack = self.consts[right]
            strings = cl.string_set(haystack)
            if strings is not None:

                def in_strings(ctx: Any) -> bool:
                    value = left(ctx)
                    if type(value) is str:
                        return value in strings
                    return in_(value, haystack)

                fn = in_strings
            else:

                def in_const(ctx: Any) -> bool:
                    return in_(left(ctx), haystack)

                fn = in_const
        else:

            def in_any(ctx: Any) -> bool:
                return in_(left(ctx), right(ctx))

            fn = in_any
        return self.fold(fn, left, right)

    def ordering(self, node: Binary) -> Fn:
        op = node.op
        left, left_size_arg = self._order_operand(node.left)
        right, right_size_arg = self._order_operand(node.right)
        if left in self.consts and right not in self.consts:
            # 1 < x is x > 1: keep the literal on the right.
            left, right = right, left
            left_size_arg, right_size_arg = right_size_arg, left_size_arg
            op = cl.FLIPPED[op]
        if right in self.consts and left not in self.consts:
            literal = self.consts[right]
            ok_types = cl.literal_order_types(literal)
            if ok_types is not None:
                if left_size_arg is not None:
                    return cl.SIZE_ORDER_FACTORIES[op](left_size_arg, literal)
                return cl.ORDER_CONST_FACTORIES[op](left, literal, ok_types)
        generic = cl.ORDER_GENERIC[op]

        def compare(ctx: Any) -> bool:
            return generic(left(ctx), right(ctx))

        return self.fold(compare, left, right)

    def _order_operand(self, node: Node) -> tuple[Fn, Fn | None]:
        """Compile an operand of a comparison; for ``size(x)`` also return the compiled ``x``."""
        arg: Node | None = None
        if isinstance(node, Call) and node.name == "size":
            arg = node.target if node.target is not None else node.args[0]
        if arg is None:
            return self.compile(node), None
        arg_fn = self.compile(arg)
        return self.fold(cl.size_call(arg_fn), arg_fn), arg_fn

    def logical(self, items: tuple[Node, ...], *, conjunction: bool) -> Fn:
        fns = tuple(self.compile(item) for item in items)
        stop = not conjunction  # && stops at the first false, || at the first true
        consts = self.consts
        # A constant operand equal to the stopping value decides the result; constants equal to the
        # other value are neutral and can be dropped. Other constants (non-bool) are errors; keep them.
        if any(fn in consts and consts[fn] is stop for fn in fns):
            return self.const(stop)
        fns = tuple(fn for fn in fns if not (fn in consts and consts[fn] is (not stop)))
        if not fns:
            return self.const(not stop)
        if len(fns) == 1:
            return cl.as_bool(fns[0], "&&" if conjunction else "||")
        if conjunction:
            return cl.and2(*fns) if len(fns) == 2 else cl.and_n(fns)
        return cl.or2(*fns) if len(fns) == 2 else cl.or_n(fns)

    def not_(self, node: Not) -> Fn:
        operand = self.compile(node.operand)

        def logical_not(ctx: Any) -> bool:
            value = operand(ctx)
            if value is True:
                return False
            if value is False:
                return True
            raise cl.eval_error("no matching overload for '!_'")

        return self.fold(logical_not, operand)

    def cond(self, node: Cond) -> Fn:
        test = self.compile(node.cond)
        then = self.compile(node.then)
        otherwise = self.compile(node.otherwise)
        if test in self.consts:
            value = self.consts[test]
            if value is True:
                return then
            if value is False:
                return otherwise

        def conditional(ctx: Any) -> Any:
            value = test(ctx)
            if value is True:
                return then(ctx)
            if value is False:
                return otherwise(ctx)
            raise cl.eval_error("no matching overload for '_?_:_'")

        return conditional

    # -- literals ------------------------------------------------------------------------------------------

    def list_lit(self, node: ListLit) -> Fn:
        fns = tuple(self.compile(item) for item in node.items)
        if all(fn in self.consts for fn in fns):
            return self.const(tuple(self.consts[fn] for fn in fns))

        def make_list(ctx: Any) -> list[Any]:
            return [fn(ctx) for fn in fns]

        return make_list

    def map_lit(self, node: MapLit) -> Fn:
        entries = tuple((self.compile(k), self.compile(v)) for k, v in node.entries)
        build = cl.build_map

        def make_map(ctx: Any) -> dict[Any, Any]:
            return build([(k(ctx), v(ctx)) for k, v in entries])

        return self.fold(make_map, *(fn for entry in entries for fn in entry))

    # -- functions -----------------------------------------------------------------------------------------

    def call(self, node: Call) -> Fn:
        name = node.name
        args = node.args if node.target is None else (node.target, *node.args)
        if name == "size":
            operand = self.compile(args[0])
            return self.fold(cl.size_call(operand), operand)
        if name == "dyn":
            return self.compile(args[0])
        fns = tuple(self.compile(arg) for arg in args)
        if name == "matches":
            return self.matches(fns[0], fns[1])
        if name in cl.STRING_METHODS:
            method = cl.STRING_METHODS[name]
            if fns[1] in self.consts and type(self.consts[fns[1]]) is str:
                return self.fold(cl.string_method_const(fns[0], self.consts[fns[1]], name, method), fns[0])
            generic2 = cl.FUNCTIONS2[name]

            def string_method(ctx: Any) -> Any:
                return generic2(fns[0](ctx), fns[1](ctx))

            return self.fold(string_method, *fns)
        if name in cl.FUNCTIONS1:
            generic1 = cl.FUNCTIONS1[name]
            operand = fns[0]

            def function(ctx: Any) -> Any:
                return generic1(operand(ctx))

            return self.fold(function, operand)
        raise CelError(f"unsupported function '{name}'")  # pragma: no cover - the parser checks names

    def matches(self, subject: Fn, pattern: Fn) -> Fn:
        if pattern not in self.consts:
            matches = rt.matches

            def dynamic_matches(ctx: Any) -> bool:
                return matches(subject(ctx), pattern(ctx))

            return self.fold(dynamic_matches, subject, pattern)
        text = self.consts[pattern]
        if type(text) is not str:
            raise CelError("matches() needs a string pattern")
        try:
            search = rt.compile_regex(text)
        except rt.RegexError as ex:
            raise CelError(f"invalid regular expression {text!r}: {ex}") from None
        memo: dict[str, bool] = {}
        generic = rt.matches

        def literal_matches(ctx: Any) -> bool:
            value = subject(ctx)
            if type(value) is not str:
                return generic(value, text)
            hit = memo.get(value)
            if hit is None:
                hit = search(value)
                if len(memo) >= _REGEX_MEMO_LIMIT:
                    memo.clear()
                memo[value] = hit
            return hit

        return self.fold(literal_matches, subject)

    # -- comprehensions ------------------------------------------------------------------------------------

    def comprehension(self, node: Comprehension) -> Fn:
        target = self.compile(node.target)
        cell = cl.Cell()
        stack = self.cells.setdefault(node.var, [])
        stack.append(cell)
        try:
            pred = self.compile(node.pred)
            transform = self.compile(node.transform) if node.transform is not None else None
        finally:
            stack.pop()
        factory = cl.COMPREHENSIONS[node.macro]
        return factory(target, cell, pred, transform, self.meter)
