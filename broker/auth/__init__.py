"""JWT verification per key type (HMAC, RSA, ECDSA) for connection and subscription tokens."""

from broker.auth.claims import (
    ConnectTokenClaims,
    SubscriptionTokenClaims,
    TokenError,
    TokenExpired,
    TokenInvalid,
)
from broker.auth.encode import (
    DEFAULT_TTL,
    connection_token_claims,
    encode_token,
    subscription_token_claims,
)
from broker.auth.keys import TokenSettings
from broker.auth.verify import MAX_TOKEN_LENGTH, TokenVerifier, unverified_user

__all__ = [
    "DEFAULT_TTL",
    "MAX_TOKEN_LENGTH",
    "ConnectTokenClaims",
    "SubscriptionTokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenSettings",
    "TokenVerifier",
    "connection_token_claims",
    "encode_token",
    "subscription_token_claims",
    "unverified_user",
]
