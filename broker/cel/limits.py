"""Resource limits applied while compiling an expression.

Expressions come from API clients, so the compiler bounds everything that could make compilation or
evaluation expensive: the text length (checked before parsing), the nesting depth of the resulting syntax
tree (which also bounds the Python stack used by compilation and evaluation), the number of syntax nodes,
and how deeply comprehension macros (``exists``, ``all``, ...) may nest, since each nested level multiplies
the work by the size of the list it iterates.

Brackets are counted before parsing: parentheses leave no node in the syntax tree, so the tree's depth
limit never sees them, yet the parser's time grows steeply with their nesting (2,000 nested parentheses
take over a second). A linear scan rejects such text before the parser is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CelError

DEFAULT_MAX_LENGTH = 4096
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_NODES = 2000
# Estimated steps per session (see broker.cel.cost). One step is roughly one closure call, 0.1-0.3 µs, so
# the costliest admitted expression takes well under a millisecond per session.
DEFAULT_MAX_COST = 2000
# What ``channels`` is assumed to hold at most when no client channel limit is configured.
DEFAULT_CHANNELS_SIZE = 128
# Two nested comprehensions over lists of n elements cost n**2 predicate calls per session; a third level
# would let one request burn n**3 per session, which is not worth allowing for a filter language.
MAX_COMPREHENSION_NESTING = 2


@dataclass(frozen=True, slots=True)
class Limits:
    max_length: int = DEFAULT_MAX_LENGTH
    max_depth: int = DEFAULT_MAX_DEPTH
    max_nodes: int = DEFAULT_MAX_NODES
    max_cost: int = DEFAULT_MAX_COST

    def check_cost(self, cost: int) -> None:
        if cost > self.max_cost:
            raise CelError(
                f"expression too costly: estimated {cost} steps per connection, limit {self.max_cost}"
            )

    def check_text(self, expression: str) -> None:
        """Reject text that must not even reach the parser."""
        if len(expression) > self.max_length:
            raise CelError(
                f"expression is too long: {len(expression)} characters, limit is {self.max_length}"
            )
        if not expression.strip():
            raise CelError("expression is empty")
        depth = bracket_depth(expression)
        if depth > self.max_depth:
            raise CelError(
                f"expression is nested too deeply: {depth} levels of brackets, limit is {self.max_depth}"
            )


_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")
_QUOTES = frozenset("\"'")


def bracket_depth(text: str) -> int:
    """The deepest nesting of ``()``, ``[]`` and ``{}`` outside string literals, in one pass over ``text``.

    Quotes follow the grammar's string literals: single or triple quotes, and a backslash always takes
    the next character with it (raw strings included, as in the grammar). An unterminated string ends
    the scan; the parser reports it.
    """
    depth = deepest = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _OPENING:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif ch in _CLOSING:
            depth -= 1
        elif ch in _QUOTES:
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                break
            i += len(quote)
            continue
        i += 1
    return deepest


class Budget:
    """Counts syntax nodes and checks depths while the syntax tree is being built."""

    __slots__ = ("_limits", "nodes")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.nodes = 0

    def node(self) -> None:
        self.nodes += 1
        if self.nodes > self._limits.max_nodes:
            raise CelError(f"expression is too complex: more than {self._limits.max_nodes} nodes")

    def depth(self, depth: int) -> None:
        if depth > self._limits.max_depth:
            raise CelError(f"expression is nested too deeply: limit is {self._limits.max_depth} levels")

    @staticmethod
    def comprehension(nesting: int) -> None:
        if nesting > MAX_COMPREHENSION_NESTING:
            raise CelError(
                f"comprehension macros are nested too deeply: limit is {MAX_COMPREHENSION_NESTING} levels"
            )
