from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import warnings
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from broker.auth import (
    MAX_TOKEN_LENGTH,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    encode_token,
    unverified_user,
)
from broker.auth.keys import TokenSettings
from broker.config import Config, ConfigError
from broker.errors import INVALID_TOKEN, TOKEN_EXPIRED

SECRET = "s3cr3t-" + "x" * 57  # 64 bytes: long enough for HS512 without PyJWT's short-key warning
NOW = 1_700_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, secret: str | bytes) -> str:
    """A token with an arbitrary header, signed with HS256 regardless of what the header says."""
    header_bytes = header if isinstance(header, bytes) else orjson.dumps(header)
    payload_bytes = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    signing_input = f"{b64url(header_bytes)}.{b64url(payload_bytes)}"
    key = secret.encode() if isinstance(secret, str) else secret
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def hmac_verifier(**overrides: Any) -> TokenVerifier:
    return TokenVerifier.for_connections(Config(token_hmac_secret_key=SECRET, **overrides))


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- error mapping -------------------------------------------------------------------------------------


def test_errors_map_to_protocol_codes() -> None:
    assert TokenExpired.client_error is TOKEN_EXPIRED
    assert TokenExpired.client_error.code == 109
    assert TokenInvalid.disconnect is INVALID_TOKEN
    assert TokenInvalid.disconnect.code == 3500


# --- HMAC ----------------------------------------------------------------------------------------------


def test_valid_hs256_connect_token() -> None:
    claims = hmac_verifier().verify_connect_token(
        encode_token(
            {"sub": "42", "exp": int(NOW) + 60, "iat": int(NOW), "jti": "abc", "info": {"name": "Ann"}},
            SECRET,
        ),
        NOW,
    )
    assert claims.user == "42"
    assert claims.exp == int(NOW) + 60
    assert claims.iat == int(NOW)
    assert claims.jti == "abc"
    assert orjson.loads(claims.info or b"") == {"name": "Ann"}
    assert claims.meta is None
    assert claims.expire_at is None
    assert claims.channels == []
    assert claims.subs == {}


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms(alg: str) -> None:
    token = encode_token({"sub": "u"}, SECRET, alg)
    assert hmac_verifier().verify_connect_token(token, NOW).user == "u"
    # PyJWT agrees that the token is what it says it is.
    assert jwt.decode(token, SECRET, algorithms=[alg])["sub"] == "u"


def test_anonymous_token_without_sub() -> None:
    assert hmac_verifier().verify_connect_token(encode_token({}, SECRET), NOW).user == ""


def test_bad_signature() -> None:
    token = encode_token({"sub": "42"}, SECRET)
    head, _, signature = token.rpartition(".")
    tampered = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(tampered, NOW)
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(encode_token({"sub": "42"}, "other-secret"), NOW)


def test_tampered_payload() -> None:
    token = encode_token({"sub": "42"}, SECRET)
    header, _, signature = token.split(".")
    forged = f"{header}.{b64url(orjson.dumps({'sub': 'admin'}))}.{signature}"
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(forged, NOW)


@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none_rejected(signature: str) -> None:
    header = b64url(orjson.dumps({"alg": "none", "typ": "JWT"}))
    payload = b64url(orjson.dumps({"sub": "42"}))
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(f"{header}.{payload}.{signature}", NOW)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "PS256", "HS1", "EdDSA", "", None, 256, ["HS256"]])
def test_unaccepted_alg_values(alg: Any) -> None:
    token = raw_token({"alg": alg, "typ": "JWT"}, {"sub": "42"}, SECRET)
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(token, NOW)


def test_missing_alg_rejected() -> None:
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(raw_token({"typ": "JWT"}, {"sub": "42"}, SECRET), NOW)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "..", "a..c", "€.b.c", "a.b.c ", " a.b.c", "a+b.c.d", "a.b.c="],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(token, NOW)


def test_padded_segments_rejected() -> None:
    # Centrifugo's verifier uses unpadded base64url; padding is refused even though PyJWT tolerates it.
    token = encode_token({"sub": "4"}, SECRET)
    header, payload, signature = token.split(".")
    assert len(signature) % 4 != 0
    padded = f"{header}.{payload}.{signature}" + "=" * (-len(signature) % 4)
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(padded, NOW)


def test_non_canonical_signature_rejected() -> None:
    token = encode_token({"sub": "42"}, SECRET)
    head, _, signature = token.rpartition(".")
    assert len(signature) % 4 == 3  # 32 bytes → 43 characters, the last one carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    tweaked = head + "." + signature[:-1] + alphabet[last | 1]
    assert base64.urlsafe_b64decode(tweaked.rpartition(".")[2] + "=") == base64.urlsafe_b64decode(
        signature + "="
    )
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(tweaked, NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "kid": 1},
        {"alg": "HS256", "crit": []},
        {"alg": "HS256", "crit": ["exp"], "exp": 1},
        {"alg": "HS256", "crit": ["b64"]},
        {"alg": "HS256", "b64": False, "crit": ["b64"]},
        [1, 2],
    ],
)
def test_header_rules(header: Any) -> None:
    token = raw_token(orjson.dumps(header), {"sub": "42"}, SECRET)
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(token, NOW)


def test_header_cache_is_bounded() -> None:
    verifier = hmac_verifier()
    for index in range(500):
        with pytest.raises(TokenInvalid):
            verifier.verify_connect_token(raw_token({"alg": "HS256", "kid": index}, {}, SECRET), NOW)
    assert len(verifier._header_verdicts) <= 64
    assert verifier.verify_connect_token(encode_token({"sub": "7"}, SECRET), NOW).user == "7"


def test_oversized_token() -> None:
    verifier = hmac_verifier()
    big = encode_token({"sub": "42", "info": {"blob": "x" * MAX_TOKEN_LENGTH}}, SECRET)
    assert len(big) > MAX_TOKEN_LENGTH
    with pytest.raises(TokenInvalid, match="too large"):
        verifier.verify_connect_token(big, NOW)
    # Just under the limit is fine.
    filler = "x" * 5000
    fits = encode_token({"sub": "42", "info": filler}, SECRET)
    assert len(fits) <= MAX_TOKEN_LENGTH
    assert verifier.verify_connect_token(fits, NOW).info == orjson.dumps(filler)


def test_payload_must_be_object() -> None:
    for payload in (b"[1]", b'"sub"', b"12", b"null", b"{bad json"):
        with pytest.raises(TokenInvalid):
            hmac_verifier().verify_connect_token(raw_token({"alg": "HS256"}, payload, SECRET), NOW)


def test_no_keys_configured_rejects_everything() -> None:
    verifier = TokenVerifier.for_connections(Config())
    assert not verifier.configured
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(encode_token({"sub": "1"}, SECRET), NOW)


# --- time ----------------------------------------------------------------------------------------------


def test_expired_token() -> None:
    verifier = hmac_verifier()
    with pytest.raises(TokenExpired):
        verifier.verify_connect_token(encode_token({"sub": "42", "exp": int(NOW) - 1}, SECRET), NOW)
    with pytest.raises(TokenExpired):  # exp is the first instant at which the token is no longer valid
        verifier.verify_connect_token(encode_token({"sub": "42", "exp": int(NOW)}, SECRET), NOW)
    assert verifier.verify_connect_token(encode_token({"sub": "42", "exp": int(NOW) + 1}, SECRET), NOW)


def test_expired_token_with_bad_signature_is_invalid_not_expired() -> None:
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(encode_token({"sub": "42", "exp": 1}, "wrong"), NOW)


def test_nbf() -> None:
    verifier = hmac_verifier()
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(encode_token({"sub": "1", "nbf": int(NOW) + 10}, SECRET), NOW)
    assert verifier.verify_connect_token(encode_token({"sub": "1", "nbf": int(NOW)}, SECRET), NOW)
    assert verifier.verify_connect_token(encode_token({"sub": "1", "nbf": int(NOW) - 10}, SECRET), NOW)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", True, [1], {"t": 1}])
def test_numeric_date_types(claim: str, value: Any) -> None:
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(encode_token({"sub": "1", claim: value}, SECRET), NOW)


def test_float_exp_accepted() -> None:
    token = encode_token({"sub": "1", "exp": NOW + 30.5}, SECRET)
    assert hmac_verifier().verify_connect_token(token, NOW).exp == int(NOW) + 30


# --- audience and issuer -------------------------------------------------------------------------------


def test_aud_iss_ignored_when_not_configured() -> None:
    token = encode_token({"sub": "1", "aud": "someone-else", "iss": "whoever"}, SECRET)
    assert hmac_verifier().verify_connect_token(token, NOW).user == "1"


def test_aud_checked_when_configured() -> None:
    verifier = hmac_verifier(token_audience="chat")
    assert verifier.verify_connect_token(encode_token({"sub": "1", "aud": "chat"}, SECRET), NOW)
    assert verifier.verify_connect_token(encode_token({"sub": "1", "aud": ["x", "chat"]}, SECRET), NOW)
    for bad in ({"aud": "other"}, {"aud": ["x"]}, {}, {"aud": 5}, {"aud": "chat2"}):
        with pytest.raises(TokenInvalid):
            verifier.verify_connect_token(encode_token({"sub": "1", **bad}, SECRET), NOW)


def test_iss_checked_when_configured() -> None:
    verifier = hmac_verifier(token_issuer="auth.example.com")
    assert verifier.verify_connect_token(encode_token({"sub": "1", "iss": "auth.example.com"}, SECRET), NOW)
    for bad in ({"iss": "evil.example.com"}, {}, {"iss": ["auth.example.com"]}):
        with pytest.raises(TokenInvalid):
            verifier.verify_connect_token(encode_token({"sub": "1", **bad}, SECRET), NOW)


def test_aud_iss_regex_full_match() -> None:
    verifier = hmac_verifier(
        token_audience_regex=r"app-[a-z]+", token_issuer_regex=r"https://[a-z]+\.example\.com"
    )
    good = {"sub": "1", "aud": "app-chat", "iss": "https://auth.example.com"}
    assert verifier.verify_connect_token(encode_token(good, SECRET), NOW)
    assert verifier.verify_connect_token(encode_token({**good, "aud": ["zzz", "app-x"]}, SECRET), NOW)
    for bad in (
        {"aud": "app-chat.evil"},
        {"aud": "xapp-chat"},
        {"aud": "app-"},
        {"iss": "https://auth.example.com.evil.org"},
        {"iss": "evil://auth.example.com"},
    ):
        with pytest.raises(TokenInvalid):
            verifier.verify_connect_token(encode_token({**good, **bad}, SECRET), NOW)


# --- connection claims ---------------------------------------------------------------------------------


def test_meta_must_be_object() -> None:
    verifier = hmac_verifier()
    assert verifier.verify_connect_token(encode_token({"meta": {"plan": "pro"}}, SECRET), NOW).meta == {
        "plan": "pro"
    }
    for meta in ([1], "x", 3, True):
        with pytest.raises(TokenInvalid, match="meta"):
            verifier.verify_connect_token(encode_token({"meta": meta}, SECRET), NOW)


def test_channel_claim_rejected_in_connection_token() -> None:
    with pytest.raises(TokenInvalid, match="channel"):
        hmac_verifier().verify_connect_token(encode_token({"sub": "1", "channel": "news"}, SECRET), NOW)


def test_b64info() -> None:
    verifier = hmac_verifier()
    raw = b"\x00\x01binary"
    token = encode_token({"b64info": base64.b64encode(raw).decode()}, SECRET)
    assert verifier.verify_connect_token(token, NOW).info == raw
    # b64info wins over info, as in Centrifugo.
    both = encode_token({"info": {"a": 1}, "b64info": base64.b64encode(b"{}").decode()}, SECRET)
    assert verifier.verify_connect_token(both, NOW).info == b"{}"
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(encode_token({"b64info": "not base64!"}, SECRET), NOW)
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(encode_token({"b64info": 12}, SECRET), NOW)


def test_info_any_json() -> None:
    verifier = hmac_verifier()
    for info in ({"a": [1, 2]}, [1], "text", 3, True):
        assert verifier.verify_connect_token(encode_token({"info": info}, SECRET), NOW).info == orjson.dumps(
            info
        )
    assert verifier.verify_connect_token(encode_token({"info": None}, SECRET), NOW).info is None


def test_channels_subs_expire_at() -> None:
    token = encode_token(
        {
            "sub": "1",
            "channels": ["news", "chat:1"],
            "subs": {"room:1": {"data": {"x": 1}, "override": {"presence": {"value": False}}}},
            "expire_at": 0,
        },
        SECRET,
    )
    claims = hmac_verifier().verify_connect_token(token, NOW)
    assert claims.channels == ["news", "chat:1"]
    assert claims.subs == {"room:1": {"data": {"x": 1}, "override": {"presence": {"value": False}}}}
    assert claims.expire_at == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 42},
        {"sub": None, "channels": "news"},
        {"channels": ["ok", 1]},
        {"subs": ["room"]},
        {"subs": {"room": 1}},
        {"subs": {"room": {"override": {"presence": True}}}},
        {"expire_at": "0"},
        {"expire_at": 1.5},
        {"expire_at": True},
        {"jti": 5},
    ],
)
def test_wrong_claim_types(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        hmac_verifier().verify_connect_token(encode_token(claims, SECRET), NOW)


def test_user_id_claim_dotted_path() -> None:
    verifier = hmac_verifier(token_user_id_claim="user.id")
    assert (
        verifier.verify_connect_token(encode_token({"sub": "x", "user": {"id": "u7"}}, SECRET), NOW).user
        == "u7"
    )
    assert verifier.verify_connect_token(encode_token({"user": {"id": 12}}, SECRET), NOW).user == "12"
    assert verifier.verify_connect_token(encode_token({"sub": "x"}, SECRET), NOW).user == ""
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(encode_token({"user": {"id": [1]}}, SECRET), NOW)


# --- subscription tokens -------------------------------------------------------------------------------


def test_subscription_token() -> None:
    verifier = TokenVerifier.for_subscriptions(Config(token_hmac_secret_key=SECRET))
    token = encode_token(
        {
            "sub": "42",
            "channel": "$secret",
            "client": "c1",
            "exp": int(NOW) + 5,
            "expire_at": int(NOW) + 100,
            "iat": int(NOW),
            "jti": "j",
            "info": {"role": "mod"},
            "b64data": base64.b64encode(b"\xff").decode(),
            "override": {"presence": {"value": True}, "join_leave": {"value": False}, "unknown": 1},
        },
        SECRET,
    )
    claims = verifier.verify_subscription_token(token, NOW)
    assert (claims.user, claims.channel, claims.client) == ("42", "$secret", "c1")
    assert (claims.exp, claims.expire_at, claims.iat, claims.jti) == (
        int(NOW) + 5,
        int(NOW) + 100,
        int(NOW),
        "j",
    )
    assert claims.info == b'{"role":"mod"}'
    assert claims.data == b"\xff"
    assert claims.override == {"presence": True, "join_leave": False}


def test_subscription_token_errors() -> None:
    verifier = TokenVerifier.for_subscriptions(Config(token_hmac_secret_key=SECRET))
    with pytest.raises(TokenInvalid, match="channel"):
        verifier.verify_subscription_token(encode_token({"sub": "42"}, SECRET), NOW)
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription_token(encode_token({"sub": "42", "channel": 5}, SECRET), NOW)
    with pytest.raises(TokenExpired):
        verifier.verify_subscription_token(encode_token({"channel": "c", "exp": int(NOW) - 1}, SECRET), NOW)
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription_token(encode_token({"channel": "c", "override": [1]}, SECRET), NOW)
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription_token(encode_token({"channel": "c", "data": 1}, "wrong-secret"), NOW)
    assert (
        verifier.verify_subscription_token(encode_token({"channel": "c", "data": 1}, SECRET), NOW).data
        == b"1"
    )


def test_separate_subscription_token_config() -> None:
    cfg = Config(
        token_hmac_secret_key=SECRET,
        separate_subscription_token_config=True,
        subscription_token_hmac_secret_key="sub-secret-" + "y" * 40,
        subscription_token_audience="subs",
    )
    subs = TokenVerifier.for_subscriptions(cfg)
    sub_token = encode_token({"channel": "c", "aud": "subs"}, "sub-secret-" + "y" * 40)
    assert subs.verify_subscription_token(sub_token, NOW).channel == "c"
    with pytest.raises(TokenInvalid):
        subs.verify_subscription_token(encode_token({"channel": "c", "aud": "subs"}, SECRET), NOW)
    with pytest.raises(TokenInvalid):  # the connection verifier keeps the connection keys
        TokenVerifier.for_connections(cfg).verify_connect_token(sub_token, NOW)
    # Without the switch, subscription tokens use the connection keys and settings.
    shared = TokenVerifier.for_subscriptions(Config(token_hmac_secret_key=SECRET))
    assert shared.verify_subscription_token(encode_token({"channel": "c"}, SECRET), NOW).channel == "c"


# --- RSA and ECDSA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_rsa(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    verifier = TokenVerifier.for_connections(Config(token_rsa_public_key=pem_public(rsa_key)))
    token = jwt.encode({"sub": "r", "exp": int(NOW) + 10}, rsa_key, algorithm=alg)
    assert verifier.verify_connect_token(token, NOW).user == "r"
    with pytest.raises(TokenExpired):
        verifier.verify_connect_token(token, NOW + 10)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(jwt.encode({"sub": "r"}, other, algorithm=alg), NOW)


def test_ps256_never_accepted(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier.for_connections(Config(token_rsa_public_key=pem_public(rsa_key)))
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(jwt.encode({"sub": "r"}, rsa_key, algorithm="PS256"), NOW)


@pytest.mark.parametrize(
    ("alg", "curve"),
    [("ES256", ec.SECP256R1()), ("ES384", ec.SECP384R1()), ("ES512", ec.SECP521R1())],
)
def test_ecdsa(alg: str, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    verifier = TokenVerifier.for_connections(Config(token_ecdsa_public_key=pem_public(key)))
    assert verifier.verify_connect_token(jwt.encode({"sub": "e"}, key, algorithm=alg), NOW).user == "e"
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(
            jwt.encode({"sub": "e"}, ec.generate_private_key(curve), algorithm=alg), NOW
        )


def test_hs_rs_confusion(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem_public(rsa_key)
    forged = encode_token({"sub": "admin"}, public_pem, "HS256")  # signed with the public key as HMAC secret
    with pytest.raises(TokenInvalid):
        TokenVerifier.for_connections(Config(token_rsa_public_key=public_pem)).verify_connect_token(
            forged, NOW
        )
    both = TokenVerifier.for_connections(
        Config(token_rsa_public_key=public_pem, token_hmac_secret_key=SECRET)
    )
    with pytest.raises(TokenInvalid):
        both.verify_connect_token(forged, NOW)
    # Both key types configured: each family still verifies with its own key.
    assert both.verify_connect_token(jwt.encode({"sub": "r"}, rsa_key, algorithm="RS256"), NOW).user == "r"
    assert both.verify_connect_token(encode_token({"sub": "h"}, SECRET), NOW).user == "h"


def test_accepted_algorithms_follow_configured_keys(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    rs_token = jwt.encode({"sub": "r"}, rsa_key, algorithm="RS256")
    es_token = jwt.encode({"sub": "e"}, ec_key, algorithm="ES256")
    hs_token = encode_token({"sub": "h"}, SECRET)

    only_hmac = TokenVerifier.for_connections(Config(token_hmac_secret_key=SECRET))
    assert only_hmac.algorithms == {"HS256", "HS384", "HS512"}
    for token in (rs_token, es_token):
        with pytest.raises(TokenInvalid, match="algorithm"):
            only_hmac.verify_connect_token(token, NOW)

    only_rsa = TokenVerifier.for_connections(Config(token_rsa_public_key=pem_public(rsa_key)))
    assert only_rsa.algorithms == {"RS256", "RS384", "RS512"}
    for token in (hs_token, es_token):
        with pytest.raises(TokenInvalid):
            only_rsa.verify_connect_token(token, NOW)

    only_ec = TokenVerifier.for_connections(Config(token_ecdsa_public_key=pem_public(ec_key)))
    assert only_ec.algorithms == {"ES256", "ES384", "ES512"}
    for token in (hs_token, rs_token):
        with pytest.raises(TokenInvalid):
            only_ec.verify_connect_token(token, NOW)


def test_certificate_accepted_as_rsa_key(rsa_key: rsa.RSAPrivateKey) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokens")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(rsa_key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    verifier = TokenVerifier.for_connections(Config(token_rsa_public_key=pem))
    assert (
        verifier.verify_connect_token(jwt.encode({"sub": "c"}, rsa_key, algorithm="RS256"), NOW).user == "c"
    )


# --- configuration errors ------------------------------------------------------------------------------


def test_key_configuration_errors(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError, match="token_hmac_secret_key"):
        TokenVerifier.for_connections(Config(token_hmac_secret_key=pem_public(rsa_key)))
    with pytest.raises(ConfigError, match="token_rsa_public_key"):
        TokenVerifier.for_connections(Config(token_rsa_public_key="-----BEGIN PUBLIC KEY-----\nxx\n"))
    with pytest.raises(ConfigError, match="not an RSA"):
        TokenVerifier.for_connections(Config(token_rsa_public_key=pem_public(ec_key)))
    with pytest.raises(ConfigError, match="not an ECDSA"):
        TokenVerifier.for_connections(Config(token_ecdsa_public_key=pem_public(rsa_key)))
    with pytest.raises(ConfigError, match="token_audience_regex"):
        TokenVerifier.for_connections(Config(token_hmac_secret_key=SECRET, token_audience_regex="("))
    with pytest.raises(ConfigError, match="subscription_token_issuer_regex"):
        TokenVerifier.for_subscriptions(
            Config(separate_subscription_token_config=True, subscription_token_issuer_regex="[")
        )


# --- fast path ≡ PyJWT ---------------------------------------------------------------------------------


def _outcome(verifier: TokenVerifier, token: str) -> tuple[str, Any]:
    try:
        return ("ok", verifier.signed_payload(token))
    except TokenInvalid:
        return ("invalid", None)


def _pyjwt_outcome(token: str) -> tuple[str, Any]:
    options = {
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_aud": False,
        "verify_iss": False,
        "verify_sub": False,
        "verify_jti": False,
    }
    try:
        payload = jwt.decode(token, SECRET, algorithms=["HS256", "HS384", "HS512"], options=options)  # type: ignore[arg-type]
    except jwt.PyJWTError:
        return ("invalid", None)
    return ("ok", payload)


def _token_corpus(rng: random.Random) -> list[str]:
    tokens: list[str] = []
    payloads: list[dict[str, Any]] = [
        {"sub": "42"},
        {"sub": "user-" + "x" * 50, "exp": 2_000_000_000, "info": {"n": [1, 2, {"k": "v"}]}},
        {"sub": "", "meta": {"a": "ü"}, "channels": ["a", "b"]},
        {"sub": "ünïcødé", "b64info": "AAEC"},
    ]
    for payload in payloads:
        for alg in ("HS256", "HS384", "HS512"):
            tokens.append(encode_token(payload, SECRET, alg))
            tokens.append(jwt.encode(payload, SECRET, algorithm=alg))
            tokens.append(encode_token(payload, SECRET[:-1] + "?", alg))
    # Tokens with unusual but valid or invalid headers, signed correctly.
    for header in (
        {"alg": "HS256"},
        {"alg": "HS256", "typ": "JWT", "kid": "k1"},
        {"alg": "HS256", "kid": 7},
        {"alg": "HS256", "crit": ["b64"], "b64": True},
        {"alg": "HS256", "crit": ["b64"], "b64": False},
        {"alg": "HS256", "crit": "b64", "b64": True},
        {"alg": "RS256"},
        {"alg": "none"},
        {"ALG": "HS256"},
    ):
        tokens.append(raw_token(header, {"sub": "h"}, SECRET))
    tokens.append(raw_token(b"[]", {"sub": "h"}, SECRET))
    tokens.append(raw_token({"alg": "HS256"}, b"[1,2]", SECRET))
    tokens.append(raw_token({"alg": "HS256"}, b"not json", SECRET))
    tokens.append(raw_token({"alg": "HS256"}, b"", SECRET))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    originals = list(tokens)
    for token in originals:
        for _ in range(40):
            chars = list(token)
            position = rng.randrange(len(chars))
            action = rng.randrange(4)
            if action == 0:
                chars[position] = rng.choice(alphabet)
            elif action == 1:
                del chars[position]
            elif action == 2:
                chars.insert(position, rng.choice(alphabet))
            else:
                chars = chars[:position]
            tokens.append("".join(chars))
        # Every single-character flip in the signature's last characters (unused-bit edge cases).
        for offset in range(1, 4):
            for replacement in "AQgwBEIM":
                tokens.append(token[:-offset] + replacement + token[len(token) - offset + 1 :])
    return tokens


def test_fast_path_matches_pyjwt() -> None:
    cfg = Config(token_hmac_secret_key=SECRET)
    fast = TokenVerifier.for_connections(cfg)
    reference = TokenVerifier.for_connections(cfg, hmac_fast_path=False)
    tokens = _token_corpus(random.Random(20240601))
    assert len(tokens) > 3000
    accepted = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a PyJWT warning would mean the comparison is not like for like
        for token in tokens:
            fast_outcome = _outcome(fast, token)
            assert fast_outcome == _outcome(reference, token), token
            if "=" in token:
                # Padding is refused by design (Centrifugo's verifier refuses it too).
                assert fast_outcome[0] == "invalid"
                continue
            # And against plain jwt.decode, JSON parser and all.
            assert fast_outcome == _pyjwt_outcome(token), token
            accepted += fast_outcome[0] == "ok"
    assert accepted >= 24


def test_fast_path_matches_pyjwt_on_claim_checks() -> None:
    cfg = Config(token_hmac_secret_key=SECRET, token_audience="a", token_issuer="i")
    fast = TokenVerifier.for_connections(cfg)
    reference = TokenVerifier.for_connections(cfg, hmac_fast_path=False)
    cases: list[dict[str, Any]] = [
        {"sub": "1", "aud": "a", "iss": "i"},
        {"sub": "1", "aud": "b", "iss": "i"},
        {"sub": "1", "aud": "a", "iss": "i", "exp": int(NOW) - 1},
        {"sub": "1", "aud": "a", "iss": "i", "nbf": int(NOW) + 1},
        {"sub": "1", "aud": "a", "iss": "i", "channel": "x"},
    ]
    for claims in cases:
        token = encode_token(claims, SECRET)
        results: list[tuple[str, Any]] = []
        for verifier in (fast, reference):
            try:
                results.append(("ok", verifier.verify_connect_token(token, NOW)))
            except (TokenInvalid, TokenExpired) as exc:
                results.append((type(exc).__name__, None))
        assert results[0] == results[1]


# --- unverified_user -----------------------------------------------------------------------------------


def test_unverified_user() -> None:
    token = encode_token({"sub": "42", "user": {"id": 7}}, SECRET)
    assert unverified_user(token) == "42"
    assert unverified_user(token, "user.id") == "7"
    assert unverified_user(token, "user.missing") == ""
    # No verification: a token signed with anything reads the same.
    assert unverified_user(encode_token({"sub": "x"}, "whatever")) == "x"
    forged = f"e30.{b64url(orjson.dumps({'sub': 'y'}))}.sig"
    assert unverified_user(forged) == "y"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "a.b",
        "a.!!!!.c",
        "a." + b64url(b"[1]") + ".c",
        "a." + b64url(b'{"sub":5.5}') + ".c",
        "a." + b64url(b'{"sub":{"a":1}}') + ".c",
        "a." + b64url(b"\xff\xfe") + ".c",
        "x" * (MAX_TOKEN_LENGTH + 1),
    ],
)
def test_unverified_user_malformed(token: str) -> None:
    assert unverified_user(token) == ""
    assert unverified_user(token, "a.b") == ""


def test_unverified_user_never_raises_on_wrong_types() -> None:
    assert unverified_user(None) == ""  # type: ignore[arg-type]
    assert unverified_user(b"a.b.c") == ""  # type: ignore[arg-type]


def test_settings_from_values() -> None:
    settings = TokenSettings.from_values(hmac_secret_key=SECRET, audience="x")
    assert settings.algorithms == {"HS256", "HS384", "HS512"}
    verifier = TokenVerifier(settings)
    assert verifier.verify_connect_token(encode_token({"aud": "x"}, SECRET), NOW).user == ""


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat", "expire_at"])
@pytest.mark.parametrize("value", [2**64, 2**63, 10**30, 1e300, -(2**64), -1e300])
def test_out_of_range_numeric_claims_are_invalid(fast_path: bool, claim: str, value: Any) -> None:
    verifier = TokenVerifier.for_connections(Config(token_hmac_secret_key=SECRET), hmac_fast_path=fast_path)
    # orjson cannot write integers past 64 bits; the stdlib can, as other issuers do.
    token = raw_token({"alg": "HS256", "typ": "JWT"}, json.dumps({"sub": "1", claim: value}).encode(), SECRET)
    with pytest.raises(TokenInvalid):
        verifier.verify_connect_token(token, NOW)


@pytest.mark.parametrize("claim", ["exp", "iat", "expire_at"])
def test_subscription_token_out_of_range_numeric_claims_are_invalid(claim: str) -> None:
    verifier = TokenVerifier.for_subscriptions(Config(token_hmac_secret_key=SECRET))
    payload = json.dumps({"sub": "1", "channel": "c", claim: 2**64}).encode()
    token = raw_token({"alg": "HS256", "typ": "JWT"}, payload, SECRET)
    with pytest.raises(TokenInvalid):
        verifier.verify_subscription_token(token, NOW)


def test_far_but_in_range_exp_is_accepted() -> None:
    token = encode_token({"sub": "1", "exp": 2**62}, SECRET)
    assert hmac_verifier().verify_connect_token(token, NOW).exp == 2**62
