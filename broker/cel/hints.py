"""Index hints: conditions every match must satisfy, usable to pick candidates from the hub's indexes.

Only conjuncts of the top-level ``&&`` chain are considered, because only those are guaranteed to hold
for every session the whole expression matches. A comparison under ``||``, ``!``, a ternary or a macro
says nothing about the result (``user == "a" || true`` matches everyone), so it yields no hint.

Recognised conjuncts (identifiers are the connection variables of the same name):

* ``user == "x"`` or ``"x" == user``, and ``user in ["x", "y"]``  -> ``users``
* the same forms for ``client``                                    -> ``clients``
* the same forms for ``app_name`` and ``transport``                -> ``app_names``, ``transports``
* ``"ch" in channels``                                             -> ``channels``

Several conjuncts on the same variable combine: user/client sets intersect (``user == "a" && user ==
"b"`` gives an empty set: nothing can match), channel requirements accumulate (a candidate must be
subscribed to all of them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .nodes import And, Binary, Ident, ListLit, Lit, Node


@dataclass(frozen=True)
class IndexHints:
    """Necessary conditions extracted from the top-level ``&&`` conjuncts of a filter.

    ``users``/``clients``: every matching session has its user (client) in this set; ``None`` means no
    hint. ``channels``: every matching session is subscribed to all of these channels; ``None`` means no
    hint. The hints are necessary, not sufficient: candidates must still be checked with ``matches``.
    """

    users: frozenset[str] | None = None
    clients: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    app_names: frozenset[str] | None = None
    transports: frozenset[str] | None = None


NO_HINTS = IndexHints()


def extract_hints(root: Node) -> IndexHints:
    conjuncts = root.items if isinstance(root, And) else (root,)
    sets: dict[str, frozenset[str]] = {}
    channels: frozenset[str] | None = None
    for node in conjuncts:
        if not isinstance(node, Binary):
            continue
        found = _candidates(node)
        if found is not None:
            name, values = found
            known = sets.get(name)
            sets[name] = values if known is None else known & values
            continue
        channel = _required_channel(node)
        if channel is not None:
            channels = frozenset({channel}) if channels is None else channels | {channel}
    if not sets and channels is None:
        return NO_HINTS
    return IndexHints(
        users=sets.get("user"),
        clients=sets.get("client"),
        channels=channels,
        app_names=sets.get("app_name"),
        transports=sets.get("transport"),
    )


def _variable(node: Node, names: tuple[str, ...]) -> str | None:
    if isinstance(node, Ident) and not node.local and node.name in names:
        return node.name
    return None


def _candidates(node: Binary) -> tuple[str, frozenset[str]] | None:
    """``user == "x"``, ``"x" == user``, ``user in ["x", ...]`` (same for the other names)."""
    names = ("user", "client", "app_name", "transport")
    if node.op == "==":
        for var_side, lit_side in ((node.left, node.right), (node.right, node.left)):
            name = _variable(var_side, names)
            if name is not None and isinstance(lit_side, Lit) and type(lit_side.value) is str:
                return name, frozenset({lit_side.value})
        return None
    if node.op == "in":
        name = _variable(node.left, names)
        right = node.right
        if name is not None and isinstance(right, ListLit):
            values = [item.value for item in right.items if isinstance(item, Lit) and type(item.value) is str]
            if len(values) == len(right.items):
                return name, frozenset(values)
    return None


def _required_channel(node: Binary) -> str | None:
    """``"ch" in channels``."""
    if (
        node.op == "in"
        and isinstance(node.left, Lit)
        and type(node.left.value) is str
        and _variable(node.right, ("channels",)) is not None
    ):
        return node.left.value
    return None
