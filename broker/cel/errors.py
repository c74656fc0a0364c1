"""Exception types shared by the CEL filter compiler and its runtime functions."""

from __future__ import annotations


class CelError(ValueError):
    """A problem found while compiling an expression.

    ``str(err)`` is written for the API client that sent the expression: the parser's message for a
    syntax error, ``undeclared reference to 'x'`` for an unknown identifier, which limit was exceeded, or
    which construct is not supported.
    """


class CelEvalError(Exception):
    """A CEL runtime error (missing key, no matching overload, overflow, division by zero, ...).

    It only travels between the compiled closures: ``&&``/``||`` may absorb it, and
    :meth:`broker.cel.CompiledFilter.matches` turns whatever is left into "not matched". Plain Python
    exceptions (``KeyError``, ``TypeError``, ...) raised by a closure are treated the same way, so hot paths
    can let Python raise them instead of checking first.
    """
