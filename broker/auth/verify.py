"""JWT verification for connection and subscription tokens.

Theory of operation
-------------------
A token is checked in this order, and each step only runs when the previous one passed:

1. Shape: at most ``MAX_TOKEN_LENGTH`` characters, three non-empty base64url segments without padding
   (what Centrifugo's verifier accepts too), each segment canonical (no stray trailing bits).
2. Header: a JSON object whose ``alg`` is one of the algorithms the configured keys admit, with PyJWT's
   header rules (``kid`` is a string, ``crit`` only lists supported extensions, no detached payload).
   The verdict per distinct header segment is cached: real deployments use one or two headers.
3. Signature: HS256/384/512 on the fast path below; RS* and ES* through PyJWT. The key is chosen by the
   algorithm's family, never by anything else in the token.
4. Payload: a JSON object (parsed with orjson on both paths, so both read the same claims).
5. Time and audience: ``exp`` passed → :class:`TokenExpired`; ``nbf`` in the future, or ``aud`` / ``iss``
   not matching a configured value or regex (full match) → :class:`TokenInvalid`. No leeway: the
   caller's ``now`` is the only clock, so tests and shards agree on the outcome.

Why an HMAC fast path
---------------------
``jwt.decode`` costs ~23 µs per HS256 token, most of it in re-validating the secret on every call
(PEM / DER / JWK sniffing) and in option merging. The fast path does the same checks with ``hmac`` and
``hmac.compare_digest`` once the secret was vetted at start-up (see ``keys.py``), and is several times
cheaper. ``hmac_fast_path=False`` sends every token through PyJWT; the tests use it as the reference and
require identical accept/reject results on valid and tampered tokens.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from typing import Any

import orjson
from jwt.api_jws import PyJWS
from jwt.exceptions import PyJWTError

from broker.auth.claims import (
    ConnectTokenClaims,
    SubscriptionTokenClaims,
    TokenExpired,
    TokenInvalid,
    connect_claims,
    numeric_date,
    subscription_claims,
)
from broker.auth.keys import ECDSA_ALGORITHMS, HMAC_ALGORITHMS, HMAC_DIGESTS, RSA_ALGORITHMS, TokenSettings
from broker.config import Config

# Browsers and proxies cap URLs and headers at a few KiB; a larger token is an attack or a mistake, and
# refusing it early bounds the work spent on unauthenticated input.
MAX_TOKEN_LENGTH = 8192

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

# A base64url segment of length 4n+2 or 4n+3 carries 4 or 2 unused bits in its last character; canonical
# encoders leave them zero, and PyJWT rejects a segment that does not re-encode to itself.
_CANONICAL_LAST_CHAR = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}

# Header extensions PyJWT understands; anything else listed in "crit" must be refused.
_SUPPORTED_CRITICAL = frozenset({"b64"})
_HEADER_CACHE_SIZE = 64

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = {0: b"", 2: b"==", 3: b"="}

_pyjws = PyJWS(options={"verify_signature": True})


class TokenVerifier:
    """Verifies tokens against one set of keys; build one per kind of token and reuse it."""

    __slots__ = (
        "_algorithms",
        "_header_verdicts",
        "_hmac_fast_path",
        "_hmac_templates",
        "_keys_by_algorithm",
        "settings",
    )

    def __init__(self, settings: TokenSettings, *, hmac_fast_path: bool = True) -> None:
        self.settings = settings
        self._hmac_fast_path = hmac_fast_path
        self._algorithms = settings.algorithms
        keys: dict[str, Any] = {}
        for alg in HMAC_ALGORITHMS:
            keys[alg] = settings.hmac_secret
        for alg in RSA_ALGORITHMS:
            keys[alg] = settings.rsa_public_key
        for alg in ECDSA_ALGORITHMS:
            keys[alg] = settings.ecdsa_public_key
        self._keys_by_algorithm = {alg: key for alg, key in keys.items() if key is not None}
        self._hmac_templates = {
            alg: hmac.new(settings.hmac_secret, digestmod=HMAC_DIGESTS[alg])
            for alg in HMAC_ALGORITHMS
            if settings.hmac_secret is not None
        }
        # header segment → (accepted algorithm, "") or ("", reason the header is refused).
        self._header_verdicts: dict[str, tuple[str, str]] = {}

    @classmethod
    def for_connections(cls, cfg: Config, *, hmac_fast_path: bool = True) -> TokenVerifier:
        return cls(TokenSettings.for_connections(cfg), hmac_fast_path=hmac_fast_path)

    @classmethod
    def for_subscriptions(cls, cfg: Config, *, hmac_fast_path: bool = True) -> TokenVerifier:
        """Uses the ``subscription_token_*`` keys when ``separate_subscription_token_config`` is on."""
        return cls(TokenSettings.for_subscriptions(cfg), hmac_fast_path=hmac_fast_path)

    @property
    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    @property
    def configured(self) -> bool:
        """False when no key is set: every token will be refused."""
        return bool(self._algorithms)

    def verify_connect_token(self, token: str, now: float) -> ConnectTokenClaims:
        return connect_claims(self.verified_payload(token, now), self.settings.user_id_claim)

    def verify_subscription_token(self, token: str, now: float) -> SubscriptionTokenClaims:
        return subscription_claims(self.verified_payload(token, now), self.settings.user_id_claim)

    def verified_payload(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a correctly signed, current token for the configured audience and issuer."""
        payload = self.signed_payload(token)
        self._check_time(payload, now)
        self._check_audience_and_issuer(payload)
        return payload

    def signed_payload(self, token: str) -> dict[str, Any]:
        """The claims of a correctly signed token, before any time, audience or issuer check."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid("token too large" if isinstance(token, str) else "token must be a string")
        if _TOKEN_SHAPE.fullmatch(token) is None:
            raise TokenInvalid("malformed token")
        header_segment, payload_segment, signature_segment = token.split(".")
        alg = self._algorithm_for(header_segment)
        if self._hmac_fast_path and alg in HMAC_DIGESTS:
            payload_bytes = self._verify_hmac(alg, header_segment, payload_segment, signature_segment)
        else:
            payload_bytes = self._verify_with_pyjwt(alg, token)
        return _parse_payload(payload_bytes)

    def _algorithm_for(self, header_segment: str) -> str:
        verdict = self._header_verdicts.get(header_segment)
        if verdict is None:
            verdict = self._judge_header(header_segment)
            if len(self._header_verdicts) >= _HEADER_CACHE_SIZE:
                # Forged tokens can carry endless distinct headers; forget rather than grow.
                self._header_verdicts.clear()
            self._header_verdicts[header_segment] = verdict
        alg, refusal = verdict
        if refusal:
            # A fresh exception each time: re-raising a cached one would grow its traceback forever.
            raise TokenInvalid(refusal)
        return alg

    def _judge_header(self, header_segment: str) -> tuple[str, str]:
        """(accepted algorithm, "") or ("", reason the header is refused)."""
        try:
            raw = _decode_segment(header_segment)
            # The stdlib parser, as PyJWT uses for headers, so that both paths judge headers alike.
            header = json.loads(raw)
        except (TokenInvalid, ValueError, RecursionError):
            return "", "malformed token header"
        if not isinstance(header, dict):
            return "", "malformed token header"
        if "kid" in header and not isinstance(header["kid"], str):
            return "", "kid header must be a string"
        if "crit" in header:
            crit = header["crit"]
            if not isinstance(crit, list) or not crit:
                return "", "crit header must be a non-empty list"
            for extension in crit:
                if not isinstance(extension, str) or extension not in _SUPPORTED_CRITICAL:
                    return "", "unsupported critical header extension"
                if extension not in header:
                    return "", "critical header extension missing"
        if header.get("b64", True) is False:
            return "", "detached payloads are not accepted"
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            return "", "token algorithm not accepted"
        return alg, ""

    def _verify_hmac(
        self, alg: str, header_segment: str, payload_segment: str, signature_segment: str
    ) -> bytes:
        signature = _decode_segment(signature_segment)
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        # Copying a keyed HMAC skips the per-call key schedule.
        mac = self._hmac_templates[alg].copy()
        mac.update(signing_input)
        expected = mac.digest()
        if not hmac.compare_digest(expected, signature):
            raise TokenInvalid("bad signature")
        return _decode_segment(payload_segment)

    def _verify_with_pyjwt(self, alg: str, token: str) -> bytes:
        try:
            decoded = _pyjws.decode_complete(token, key=self._keys_by_algorithm[alg], algorithms=[alg])
        except PyJWTError as exc:
            raise TokenInvalid("bad signature") from exc
        payload: bytes = decoded["payload"]
        return payload

    @staticmethod
    def _check_time(payload: dict[str, Any], now: float) -> None:
        # numeric_date refuses non-numbers and values outside int64 (TokenInvalid) before any comparison.
        for name in ("iat", "expire_at"):
            numeric_date(payload, name)
        exp = numeric_date(payload, "exp")
        if exp is not None and exp <= now:
            raise TokenExpired()
        nbf = numeric_date(payload, "nbf")
        if nbf is not None and nbf > now:
            raise TokenInvalid("token not valid yet")

    def _check_audience_and_issuer(self, payload: dict[str, Any]) -> None:
        settings = self.settings
        if settings.audience or settings.audience_regex is not None:
            audiences = _audiences(payload.get("aud"))
            if settings.audience and settings.audience not in audiences:
                raise TokenInvalid("audience mismatch")
            pattern = settings.audience_regex
            if pattern is not None and not any(pattern.fullmatch(aud) for aud in audiences):
                raise TokenInvalid("audience mismatch")
        if settings.issuer or settings.issuer_regex is not None:
            issuer = payload.get("iss")
            if not isinstance(issuer, str):
                raise TokenInvalid("issuer mismatch")
            if settings.issuer and issuer != settings.issuer:
                raise TokenInvalid("issuer mismatch")
            if settings.issuer_regex is not None and settings.issuer_regex.fullmatch(issuer) is None:
                raise TokenInvalid("issuer mismatch")


def unverified_user(token: str, user_id_claim: str = "") -> str:
    """The user id a token claims, read WITHOUT checking its signature; "" for anything malformed.

    Only good for choosing which process handles a connection: a forged token merely picks which
    process rejects it. Never raises.
    """
    try:
        if len(token) > MAX_TOKEN_LENGTH:
            return ""
        first_dot = token.index(".")
        second_dot = token.index(".", first_dot + 1)
        segment = token[first_dot + 1 : second_dot]
        payload = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        value: Any = payload
        for part in (user_id_claim or "sub").split("."):
            value = value[part]
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return ""
    except Exception:
        return ""


def _decode_segment(segment: str) -> bytes:
    remainder = len(segment) % 4
    if remainder == 1 or (remainder and segment[-1] not in _CANONICAL_LAST_CHAR[remainder]):
        raise TokenInvalid("malformed token")
    try:
        return binascii.a2b_base64(
            segment.encode("ascii").translate(_URLSAFE_TO_STANDARD) + _PADDING[remainder]
        )
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the shape check excludes these
        raise TokenInvalid("malformed token") from exc


def _parse_payload(raw: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TokenInvalid("malformed token payload") from exc
    if not isinstance(payload, dict):
        raise TokenInvalid("token payload must be a JSON object")
    return payload


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(aud, str) for aud in value):
        return value
    return []
