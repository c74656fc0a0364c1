"""Where the IPC endpoints live inside the runtime directory."""

from __future__ import annotations

from pathlib import Path


def control_endpoint(runtime_dir: Path) -> str:
    return f"ipc://{runtime_dir / 'control.ipc'}"


def handoff_path(runtime_dir: Path, index: int) -> Path:
    return runtime_dir / f"shard-{index}.handoff"


def shard_identity(index: int) -> bytes:
    return b"shard-%d" % index


def publish_endpoint(runtime_dir: Path, index: int) -> str:
    """Shard ``index``'s PUB socket: publications of the channels it writes."""
    return f"ipc://{runtime_dir / f'pub-{index}.ipc'}"


def peer_endpoint(runtime_dir: Path, index: int) -> str:
    """Shard ``index``'s ROUTER for requests it sends to other shards (e.g. a client publish)."""
    return f"ipc://{runtime_dir / f'peer-{index}.ipc'}"
