"""The example configs in deploy/ load as they are, with no key reported unknown."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("*.json")), ids=lambda p: p.name)
def test_example_config_loads(path: Path) -> None:
    cfg = load(path, environ={})
    assert cfg.unknown_keys == [] and cfg.unknown_env == []


def test_the_multinode_example_is_on_redis() -> None:
    cfg = load(DEPLOY / "config.redis.example.json", environ={})
    assert cfg.engine == "redis" and cfg.node_display_name == "node-a"
