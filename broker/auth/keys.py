"""Token settings: which keys verify tokens, and therefore which algorithms are accepted.

The accepted algorithms follow the configured keys and nothing else: an HMAC secret admits HS256/384/512,
an RSA public key RS256/384/512, an ECDSA public key ES256/384/512. ``none`` and the PS* family are never
accepted. Each algorithm family is verified with its own key only, so a token claiming HS256 is never
checked against the RSA public key (the classic HS/RS confusion).

Keys are loaded once here, so that a broken PEM or regex is a configuration error at start-up rather
than a rejected token at run time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from broker.config import Config, ConfigError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
ECDSA_ALGORITHMS = ("ES256", "ES384", "ES512")

HMAC_DIGESTS: dict[str, Callable[..., Any]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Everything needed to verify one kind of token (connection or subscription)."""

    hmac_secret: bytes | None = None
    rsa_public_key: RSAPublicKey | None = None
    ecdsa_public_key: EllipticCurvePublicKey | None = None
    audience: str = ""
    issuer: str = ""
    audience_regex: re.Pattern[str] | None = None
    issuer_regex: re.Pattern[str] | None = None
    user_id_claim: str = ""

    @property
    def algorithms(self) -> frozenset[str]:
        accepted: list[str] = []
        if self.hmac_secret is not None:
            accepted.extend(HMAC_ALGORITHMS)
        if self.rsa_public_key is not None:
            accepted.extend(RSA_ALGORITHMS)
        if self.ecdsa_public_key is not None:
            accepted.extend(ECDSA_ALGORITHMS)
        return frozenset(accepted)

    @classmethod
    def for_connections(cls, cfg: Config) -> TokenSettings:
        return cls.from_values(
            hmac_secret_key=cfg.token_hmac_secret_key,
            rsa_public_key=cfg.token_rsa_public_key,
            ecdsa_public_key=cfg.token_ecdsa_public_key,
            audience=cfg.token_audience,
            issuer=cfg.token_issuer,
            audience_regex=cfg.token_audience_regex,
            issuer_regex=cfg.token_issuer_regex,
            user_id_claim=cfg.token_user_id_claim,
            key_prefix="token_",
        )

    @classmethod
    def for_subscriptions(cls, cfg: Config) -> TokenSettings:
        if not cfg.separate_subscription_token_config:
            return cls.for_connections(cfg)
        return cls.from_values(
            hmac_secret_key=cfg.subscription_token_hmac_secret_key,
            rsa_public_key=cfg.subscription_token_rsa_public_key,
            ecdsa_public_key=cfg.subscription_token_ecdsa_public_key,
            audience=cfg.subscription_token_audience,
            issuer=cfg.subscription_token_issuer,
            audience_regex=cfg.subscription_token_audience_regex,
            issuer_regex=cfg.subscription_token_issuer_regex,
            user_id_claim=cfg.subscription_token_user_id_claim,
            key_prefix="subscription_token_",
        )

    @classmethod
    def from_values(
        cls,
        *,
        hmac_secret_key: str = "",
        rsa_public_key: str = "",
        ecdsa_public_key: str = "",
        audience: str = "",
        issuer: str = "",
        audience_regex: str = "",
        issuer_regex: str = "",
        user_id_claim: str = "",
        key_prefix: str = "token_",
    ) -> TokenSettings:
        return cls(
            hmac_secret=_hmac_secret(hmac_secret_key, key_prefix + "hmac_secret_key"),
            rsa_public_key=_rsa_key(rsa_public_key, key_prefix + "rsa_public_key"),
            ecdsa_public_key=_ecdsa_key(ecdsa_public_key, key_prefix + "ecdsa_public_key"),
            audience=audience,
            issuer=issuer,
            audience_regex=_regex(audience_regex, key_prefix + "audience_regex"),
            issuer_regex=_regex(issuer_regex, key_prefix + "issuer_regex"),
            user_id_claim=user_id_claim,
        )


def _hmac_secret(secret: str, key_name: str) -> bytes | None:
    if not secret:
        return None
    # PyJWT refuses secrets that look like asymmetric keys (PEM, SSH, DER, JWK) on every decode. The HMAC
    # fast path must reject exactly what PyJWT rejects, and such a secret is a misconfiguration that
    # invites HS/RS confusion anyway, so refuse it once, here.
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError as exc:
        raise ConfigError(f"{key_name}: an asymmetric key cannot be used as an HMAC secret") from exc
    return secret.encode()


def _load_public_key(pem: str, key_name: str) -> object:
    data = pem.strip().encode()
    try:
        return load_pem_public_key(data)
    except (ValueError, TypeError):
        pass
    # A certificate is accepted too: its public key verifies the tokens.
    try:
        return load_pem_x509_certificate(data).public_key()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_name}: not a PEM public key or certificate") from exc


def _rsa_key(pem: str, key_name: str) -> RSAPublicKey | None:
    if not pem:
        return None
    key = _load_public_key(pem, key_name)
    if not isinstance(key, RSAPublicKey):
        raise ConfigError(f"{key_name}: not an RSA public key")
    return key


def _ecdsa_key(pem: str, key_name: str) -> EllipticCurvePublicKey | None:
    if not pem:
        return None
    key = _load_public_key(pem, key_name)
    if not isinstance(key, EllipticCurvePublicKey):
        raise ConfigError(f"{key_name}: not an ECDSA public key")
    return key


def _regex(pattern: str, key_name: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{key_name}: invalid regular expression: {exc}") from exc
