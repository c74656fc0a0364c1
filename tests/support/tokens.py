"""Connection tokens signed with the secret every test server is configured with."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from broker.auth import encode_token

SECRET = "integration-secret"


def make_token(user: str, secret: str = SECRET, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": user, "iat": int(time.time()), "exp": int(time.time()) + 3600}
    payload.update(claims)
    return encode_token(payload, secret)


def token_subject(token: str) -> str:
    """The ``sub`` of a token, unverified ("" when there is none)."""
    try:
        part = token.split(".")[1]
        return str(orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))).get("sub", ""))
    except (IndexError, ValueError):
        return ""
