"""The HTTP side of the proxies: one keep-alive pool per backend, a deadline per call, safe headers.

A call is ``POST <endpoint>`` with a JSON body; it fails (:class:`ProxyFailed`) on timeout, a refused
or broken connection, a status other than 200, or a body that is not JSON. At most ``POOL_SIZE``
requests to one backend are in flight from one process; more wait for a free connection within their
deadline, so a slow backend delays its own calls and nothing else; beyond ``MAX_WAITING`` waiting
calls a new one fails at once.

Headers (Centrifugo v6.9's fixed design): a header of the client's real HTTP request is forwarded when
``proxy_http_headers`` names it; a header the client supplied itself (the SDK's ``headers`` option,
"emulated" headers in the ConnectRequest) only when ``proxy_emulated_headers`` names it, and never one of
:data:`NEVER_EMULATED` (client addresses a proxy or balancer sets). ``proxy_static_http_headers`` are
added to every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("switchboard.proxy")

POOL_SIZE = 64
# Calls to one backend that may wait for a pool connection at once; more fail at once rather than
# pile up (a burst of commands from hostile clients must not grow memory until their deadlines).
MAX_WAITING = 4096
NEVER_EMULATED = frozenset(
    {"x-forwarded-for", "x-real-ip", "x-forwarded-host", "x-forwarded-proto", "forwarded", "host"}
)


class ProxyFailed(Exception):
    """The backend did not decide: the message says why (one log line by the caller)."""


def forwarded_headers(
    request_headers: Mapping[str, str],
    emulated: Mapping[str, Any] | None,
    allowed: frozenset[str],
    emulation_allowed: frozenset[str],
    static: Mapping[str, str],
) -> dict[str, str]:
    """The headers of one proxy call. ``request_headers`` are the real request's (lower-case names)."""
    out: dict[str, str] = {}
    if emulated:
        for name, value in emulated.items():
            key = str(name).lower()
            if key in emulation_allowed and key not in NEVER_EMULATED and isinstance(value, str):
                out[key] = value
    for name in allowed:
        value = request_headers.get(name)
        if value is not None:
            out[name] = value  # the real request wins over an emulated header of the same name
    out.update(static)
    return out


def kept_headers(
    request_headers: Mapping[str, str],
    emulated: Mapping[str, Any] | None,
    real_names: frozenset[str],
    emulated_names: frozenset[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """What a connection keeps of its request for later proxy calls: the real headers some proxy
    forwards, and the client-supplied ones some proxy allows (each proxy filters again per call)."""
    real = {name: request_headers[name] for name in real_names if name in request_headers}
    supplied = forwarded_headers({}, emulated, frozenset(), emulated_names, {})
    return real, supplied


class ProxyClient:
    """Calls to one backend endpoint (created inside the running loop)."""

    def __init__(self, endpoint: str, timeout: float, max_waiting: int = MAX_WAITING) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_waiting = max_waiting
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Imported on the first call: a process without proxies never loads aiohttp (~9 MiB).
        import aiohttp

        if self._session is None:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=lambda v: v)
        return self._session

    async def call(self, body: dict[str, Any], headers: Mapping[str, str]) -> Any:
        if self.in_flight >= POOL_SIZE + self.max_waiting:
            raise ProxyFailed(f"{self.endpoint}: {self.in_flight} calls in flight already")
        self.in_flight += 1
        try:
            return await self._call(body, headers)
        finally:
            self.in_flight -= 1

    async def _call(self, body: dict[str, Any], headers: Mapping[str, str]) -> Any:
        payload = orjson.dumps(body)
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client().post(
                    self.endpoint, data=payload, headers={**headers, "Content-Type": "application/json"}
                ) as response:
                    raw = await response.read()
                    if response.status != 200:
                        raise ProxyFailed(f"{self.endpoint} answered HTTP {response.status}")
        except TimeoutError:
            raise ProxyFailed(f"{self.endpoint} did not answer within {self.timeout:g}s") from None
        except _client_error() as exc:
            raise ProxyFailed(f"{self.endpoint} unreachable: {exc!r}") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProxyFailed(f"{self.endpoint} answered something that is not JSON") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _client_error() -> type[Exception]:
    import aiohttp

    return aiohttp.ClientError
