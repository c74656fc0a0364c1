"""CEL filters over live client sessions, compiled to Python closures.

Usage::

    flt = compile_filter('meta.tenant == "acme" && "chat:1" in channels', variables)
    candidates = index_lookup(flt.hints) or all_sessions
    matched = [s for s in candidates if flt.matches(s)]

``variables`` maps each identifier an expression may use to a getter applied to the session object,
for example ``{"user": operator.attrgetter("user"), "meta": lambda s: s.meta or {}}``; any other
identifier is a compile error. Getters return JSON-like values (str, int, float, bool, None, lists,
tuples, sets, dicts).

Semantics follow CEL: a missing map key is an error, ``&&``/``||`` absorb errors commutatively, and a
filter matches only when the expression evaluates to exactly ``true``; any error means "not matched".
Intentional choices: ``int`` and ``double`` compare by numeric value (``1 == 1.0`` is true, as the current
CEL specification says) while arithmetic requires equal types; unsigned integers, bytes, timestamps,
durations, ``type()`` and protobuf messages are not supported and are rejected at compile time.
See :mod:`broker.cel.compiler` for how evaluation works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .closures import Meter
from .compiler import compile_tree
from .cost import estimate_steps
from .errors import CelError
from .hints import NO_HINTS, IndexHints, extract_hints
from .limits import (
    DEFAULT_CHANNELS_SIZE,
    DEFAULT_MAX_COST,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_NODES,
    Limits,
)
from .syntax import build, parse

__all__ = [
    "CONNECTION_VARIABLES",
    "NO_HINTS",
    "CelError",
    "CompiledFilter",
    "IndexHints",
    "Meter",
    "compile_filter",
]

# The variables the server provides to connection filters:
#   user, client, session, app_name, app_version, transport, protocol: strings ("" when unknown)
#   channels: list of the channel names the session is subscribed to
#   meta, info: maps (connection meta and connection info), {} when there is none
#   labels: map of strings (the token's or the connect proxy's labels), {} when there are none
#   connected_at_ms: int (Unix ms); ping_pong_latency_ms: int (-1 until a pong was measured)
CONNECTION_VARIABLES = (
    "user",
    "client",
    "session",
    "app_name",
    "app_version",
    "transport",
    "protocol",
    "channels",
    "meta",
    "info",
    "labels",
    "connected_at_ms",
    "ping_pong_latency_ms",
)


class CompiledFilter:
    """A compiled expression: :meth:`matches` decides whether one session object matches.

    ``cost`` is the static upper bound of steps per session (see :mod:`broker.cel.cost`); ``meter.steps``
    grows by the number of comprehension iterations actually run, for runtime budgets.
    """

    __slots__ = ("_fn", "cost", "expression", "hints", "meter")

    expression: str
    hints: IndexHints
    cost: int
    meter: Meter

    def __init__(
        self,
        expression: str,
        hints: IndexHints,
        fn: Callable[[Any], Any],
        cost: int = 1,
        meter: Meter | None = None,
    ) -> None:
        self.expression = expression
        self.hints = hints
        self._fn = fn
        self.cost = cost
        self.meter = meter or Meter()

    @property
    def function(self) -> Callable[[Any], Any]:
        """The compiled expression itself: it may raise; only a result that ``is True`` matches."""
        return self._fn

    def matches(self, ctx: object) -> bool:
        """True only if the expression evaluates to exactly ``true`` for ``ctx``; never raises."""
        try:
            return self._fn(ctx) is True
        except Exception:
            # Any CEL evaluation error (and anything a getter raises) means "not matched".
            return False

    def __repr__(self) -> str:
        return f"CompiledFilter({self.expression!r}, hints={self.hints!r})"


def compile_filter(
    expression: str,
    variables: Mapping[str, Callable[[Any], Any]],
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_cost: int = DEFAULT_MAX_COST,
    channels_size: int = DEFAULT_CHANNELS_SIZE,
) -> CompiledFilter:
    """Compile ``expression``; raises :class:`CelError` with a client-facing message when it is invalid.

    ``max_cost`` bounds the estimated steps per session, with ``channels`` assumed to hold at most
    ``channels_size`` channels (the client channel limit).
    """
    if not isinstance(expression, str):
        raise CelError("expression must be a string")
    limits = Limits(max_length=max_length, max_depth=max_depth, max_nodes=max_nodes, max_cost=max_cost)
    limits.check_text(expression)
    try:
        tree = parse(expression)
        root, _ = build(tree, variables.keys(), limits)
        cost = estimate_steps(root, channels_size)
        limits.check_cost(cost)
        meter = Meter()
        fn = compile_tree(root, variables, meter)
    except RecursionError:
        raise CelError("expression is nested too deeply") from None
    return CompiledFilter(expression, extract_hints(root), fn, cost, meter)
