"""Which proxy answers which event, and the configurations refused at start."""

from __future__ import annotations

from typing import Any

import pytest

from broker.channel_options import ChannelOptions
from broker.config import ConfigError, build
from broker.proxy.table import proxy_table

URL = "http://127.0.0.1:9"


def table(**settings: Any) -> Any:
    return proxy_table(build(settings, environ={}))


def test_flat_mode_one_endpoint_per_event_sharing_the_header_settings() -> None:
    found = table(
        proxy_connect_endpoint=f"{URL}/c",
        proxy_rpc_endpoint=f"{URL}/r",
        proxy_rpc_timeout="3s",
        proxy_subscribe_endpoint=f"{URL}/s",
        proxy_http_headers=["Authorization"],
        proxy_emulated_headers=["X-App"],
        proxy_static_http_headers={"X-Static": "1"},
        proxy_include_connection_meta=True,
    )
    assert found.connect.endpoint == f"{URL}/c" and found.refresh is None
    assert found.for_rpc("any:method").timeout == 3.0
    spec = found.for_channel("subscribe", ChannelOptions(proxy_subscribe=True))
    assert spec.endpoint == f"{URL}/s" and spec.include_connection_meta
    assert spec.http_headers == {"authorization"} and spec.emulated_headers == {"x-app"}
    assert found.for_channel("subscribe", ChannelOptions()) is None
    assert found.for_channel("publish", ChannelOptions(proxy_publish=True)) is None
    assert found.forwarded_header_names == {"authorization"}


def test_granular_mode_names_a_proxy_per_event_and_namespace() -> None:
    found = table(
        granular_proxy_mode=True,
        proxies=[
            {"name": "a", "endpoint": f"{URL}/a", "http_headers": ["Cookie"]},
            {"name": "b", "endpoint": f"{URL}/b", "timeout": "250ms", "binary_encoding": True},
        ],
        connect_proxy_name="a",
        rpc_proxy_name="a",
        rpc_namespaces=[{"name": "pay", "rpc_proxy_name": "b"}],
        namespaces=[{"name": "chat", "publish_proxy_name": "b"}],
    )
    assert found.connect.name == "a" and found.refresh is None
    assert found.for_rpc("pay:charge").name == "b" and found.for_rpc("pay:charge").timeout == 0.25
    assert found.for_rpc("other:x").name == "a" and found.for_rpc("plain").name == "a"
    assert found.for_channel("publish", ChannelOptions(publish_proxy_name="b")).binary_encoding
    assert found.forwarded_header_names == {"cookie"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"namespaces": [{"name": "ns", "proxy_subscribe": True}]}, "proxy_subscribe_endpoint is not set"),
        ({"namespaces": [{"name": "ns", "subscribe_proxy_enabled": True}]}, "proxy_subscribe is on"),
        ({"proxy_publish_endpoint": "grpc://127.0.0.1:9"}, "must be an http:// or https:// URL"),
        ({"proxy_refresh_endpoint": f"{URL}/r", "proxy_refresh_timeout": "0s"}, "must be positive"),
        ({"rpc_namespaces": [{"name": "x"}]}, "needs granular_proxy_mode"),
        ({"connect_proxy_name": "a"}, "needs granular_proxy_mode"),
        ({"granular_proxy_mode": True, "connect_proxy_name": "nope"}, "no proxy named 'nope'"),
        ({"granular_proxy_mode": True, "proxy_rpc_endpoint": f"{URL}/r"}, "define it in proxies"),
        ({"granular_proxy_mode": True, "proxies": [{"name": "a"}]}, "endpoint must be a string"),
        (
            {
                "granular_proxy_mode": True,
                "proxies": [{"name": "a", "endpoint": URL, "grpc_metadata": ["x"]}],
            },
            "gRPC proxies are not supported yet",
        ),
        (
            {"granular_proxy_mode": True, "proxies": [{"name": "a", "endpoint": URL, "typo": 1}]},
            "unknown key",
        ),
        (
            {"granular_proxy_mode": True, "proxies": [{"name": "a", "endpoint": URL}] * 2},
            "used twice",
        ),
        (
            {"granular_proxy_mode": True, "namespaces": [{"name": "ns", "sub_refresh_proxy_name": "x"}]},
            "no proxy named 'x'",
        ),
    ],
)
def test_configurations_that_cannot_work_stop_the_server(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(settings, environ={})


def test_flat_keys_from_the_environment() -> None:
    cfg = build(
        {}, environ={"CENTRIFUGO_PROXY_SUBSCRIBE_ENDPOINT": f"{URL}/s", "CENTRIFUGO_PROXY_SUBSCRIBE": "true"}
    )
    assert proxy_table(cfg).for_channel("subscribe", ChannelOptions(proxy_subscribe=True)) is not None
