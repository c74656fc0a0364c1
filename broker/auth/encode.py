"""Making HMAC tokens, for the ``gentoken`` / ``gensubtoken`` commands and for tests.

The server only verifies tokens; applications issue them. These functions exist so that an operator can
try a deployment without writing a token issuer first, exactly like ``centrifugo gentoken``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from broker.auth.keys import HMAC_DIGESTS

# Centrifugo's gentoken default: one week.
DEFAULT_TTL = 7 * 24 * 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_token(claims: Mapping[str, Any], secret: str | bytes, algorithm: str = "HS256") -> str:
    """A compact JWS of ``claims`` signed with an HMAC secret (HS256, HS384 or HS512)."""
    digest = HMAC_DIGESTS.get(algorithm)
    if digest is None:
        raise ValueError(f"unsupported algorithm {algorithm!r}: only HS256, HS384 and HS512 are issued")
    key = secret.encode() if isinstance(secret, str) else secret
    if not key:
        raise ValueError("an HMAC secret is required")
    header = _b64url(orjson.dumps({"alg": algorithm, "typ": "JWT"}))
    payload = _b64url(orjson.dumps(dict(claims)))
    signing_input = f"{header}.{payload}"
    signature = hmac.new(key, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{_b64url(signature)}"


def connection_token_claims(user: str, ttl: int, now: int) -> dict[str, Any]:
    """Claims as ``gentoken`` writes them: ``exp`` only when ``ttl`` is positive."""
    claims: dict[str, Any] = {"sub": user, "iat": now}
    if ttl > 0:
        claims["exp"] = now + ttl
    return claims


def subscription_token_claims(user: str, channel: str, ttl: int, now: int) -> dict[str, Any]:
    claims = connection_token_claims(user, ttl, now)
    claims["channel"] = channel
    return claims
