"""The option docs, `defaultconfig` and `defaultenv` come from the option declarations and stay current."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from broker.channel_options import ChannelOptions
from broker.config import Config, build
from broker.config_docs import README_END, README_START, default_document, env_lines, readme_with_options

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_option_tables_are_current() -> None:
    text = README.read_text()
    assert README_START in text and README_END in text
    assert readme_with_options(text) == text, "run: python -m broker.config_docs README.md"


def test_every_option_is_described() -> None:
    for cls in (Config, ChannelOptions):
        for f in dataclasses.fields(cls):
            if f.metadata.get("v6") or f.metadata.get("doc"):
                assert f.metadata["doc"], f.name


def test_default_document_is_the_defaults() -> None:
    cfg = build(default_document(), {}, {})
    defaults = Config()
    assert cfg.unknown_keys == []
    for f in dataclasses.fields(Config):
        if f.name != "channel_options":
            assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name
    assert ChannelOptions.from_mapping(cfg.channel_options) == ChannelOptions()


def test_env_lines_name_every_leaf_once() -> None:
    lines = env_lines(default_document())
    names = [line.split("=", 1)[0] for line in lines]
    assert len(names) == len(set(names))
    assert "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY" in names
    assert "CENTRIFUGO_CHANNEL_WITHOUT_NAMESPACE_PRESENCE" in names
    assert "CENTRIFUGO_CLIENT_PROXY_CONNECT_ENDPOINT" in names
