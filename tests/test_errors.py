"""Errors are raised fresh: a raise keeps no frame alive, and no source raises a shared constant."""

from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

import pytest

from broker import errors
from broker.errors import ClientError, Disconnect

CONSTANTS = [
    (name, value)
    for name, value in vars(errors).items()
    if name.isupper() and isinstance(value, ClientError | Disconnect)
]
ROOT = Path(__file__).resolve().parent.parent


class _Session:
    """Stands for the per-connection state a raising frame holds in its locals."""


def _raise_from_a_frame_holding(session: _Session, error: ClientError | Disconnect) -> None:
    held = session  # noqa: F841 - a local of the raising frame, as a session is in the protocol core
    raise error()


@pytest.mark.parametrize(("name", "constant"), CONSTANTS, ids=[name for name, _ in CONSTANTS])
def test_raising_a_constant_many_times_keeps_no_frame_alive(
    name: str, constant: ClientError | Disconnect
) -> None:
    refs = []
    for _ in range(200):
        session = _Session()
        refs.append(weakref.ref(session))
        with pytest.raises(type(constant)) as raised:
            _raise_from_a_frame_holding(session, constant)
        assert raised.value == constant
        assert raised.value is not constant
        del session, raised
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} sessions kept alive by raising {name}"
    assert constant.__traceback__ is None


def test_a_fresh_copy_equals_the_constant_and_is_a_new_object() -> None:
    fresh = errors.BAD_REQUEST()
    assert fresh == errors.BAD_REQUEST and fresh is not errors.BAD_REQUEST
    assert errors.SLOW() == errors.SLOW and errors.SLOW() is not errors.SLOW


def _raises_of_shared_objects(tree: ast.AST) -> list[int]:
    """Lines that raise an attribute or an UPPER_CASE name: a module-level error object, not a fresh one."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc
        if isinstance(exc, ast.Attribute) or (isinstance(exc, ast.Name) and exc.id.lstrip("_").isupper()):
            lines.append(node.lineno)
    return lines


def test_no_source_raises_a_shared_error_object() -> None:
    found = []
    for package in ("broker", "router", "shards", "tests", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.endswith("_pb2.py") or "node_modules" in path.parts:
                continue
            for line in _raises_of_shared_objects(ast.parse(path.read_text(), str(path))):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == []


def test_the_source_check_catches_a_shared_raise() -> None:
    tree = ast.parse(
        "def f():\n    raise errors.BAD_REQUEST\n\ndef g():\n    raise _BAD\n\ndef h():\n    raise X()\n"
    )
    assert _raises_of_shared_objects(tree) == [2, 5]
