"""Resource limits applied while compiling an expression.

Expressions come from API clients, so the compiler bounds everything that could make compilation or
evaluation expensive: the text length (checked before parsing), the nesting depth of the resulting syntax
tree (which also bounds the Python stack used by compilation and evaluation), the number of syntax nodes,
and how deeply comprehension macros (``exists``, ``all``, ...) may nest, since each nested level multiplies
the work by the size of the list it iterates.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CelError

DEFAULT_MAX_LENGTH = 4096
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_NODES = 2000
# Two nested comprehensions over lists of n elements cost n**2 predicate calls per session; a third level
# would let one request burn n**3 per session, which is not worth allowing for a filter language.
MAX_COMPREHENSION_NESTING = 2


@dataclass(frozen=True, slots=True)
class Limits:
    max_length: int = DEFAULT_MAX_LENGTH
    max_depth: int = DEFAULT_MAX_DEPTH
    max_nodes: int = DEFAULT_MAX_NODES

    def check_text(self, expression: str) -> None:
        """Reject text that must not even reach the parser."""
        if len(expression) > self.max_length:
            raise CelError(
                f"expression is too long: {len(expression)} characters, limit is {self.max_length}"
            )
        if not expression.strip():
            raise CelError("expression is empty")


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
