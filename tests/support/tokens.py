"""Connection and subscription tokens signed with the secret the test servers are configured with."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from broker.auth import encode_token

SECRET = "integration-secret"
API_KEY = "integration-api-key"


def make_token(user: str, secret: str = SECRET, **claims: Any) -> str:
    """A connection token for ``user``, valid for an hour unless ``claims`` say otherwise."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "iat": now, "exp": now + 3600}
    payload.update(claims)
    return encode_token(payload, secret)


def subscription_token(
    user: str, channel: str, ttl: float = 3600, secret: str = SECRET, **claims: Any
) -> str:
    """A subscription token of ``user`` for ``channel``, valid for ``ttl`` seconds."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": user, "channel": channel, "iat": now, "exp": int(now + ttl)}
    payload.update(claims)
    return encode_token(payload, secret)


def token_subject(token: str) -> str:
    """The ``sub`` claim of a token, unverified ("" when it is not a readable JWT)."""
    try:
        part = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("sub", "")) if isinstance(claims, dict) else ""
