"""JSON input the server can pass on: parsed, and known to be writable again by orjson.

orjson parses up to 1,024 levels of nesting but serialises at most 254. A value nested between the two
parses fine and then fails wherever it is written again (forwarded to a shard inside an envelope, echoed
in a reply), far from the input that caused it. Checking once at the edge turns it into a bad request.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

# Levels kept free for the envelopes a value is wrapped in on its way (control request, batch reply).
ENVELOPE_LEVELS: Final = 4


def loads_writable(data: bytes | str) -> Any:
    """``orjson.loads``, also refusing values too deeply nested to be written again; raises ValueError."""
    value = orjson.loads(data)
    if isinstance(value, dict | list):
        wrapped: Any = value
        for _ in range(ENVELOPE_LEVELS):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
        except orjson.JSONEncodeError:
            raise ValueError("JSON nested too deeply") from None
    return value
