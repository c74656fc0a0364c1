"""History and stream engines: where a channel's writer shard keeps offsets, epochs and publications."""

from broker.engine.base import (
    DEFAULT_IDEMPOTENCY_TTL,
    HistoryEngine,
    HistoryResult,
    PublishResult,
    RecoveryResult,
    StreamPosition,
)
from broker.engine.memory import MemoryEngine, new_epoch

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL",
    "HistoryEngine",
    "HistoryResult",
    "MemoryEngine",
    "PublishResult",
    "RecoveryResult",
    "StreamPosition",
    "new_epoch",
]
