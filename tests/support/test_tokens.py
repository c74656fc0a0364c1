"""Tokens signed with the test servers' secret, and reading their subject back."""

from __future__ import annotations

import time

import jwt
import pytest

from tests.support.tokens import SECRET, make_token, subscription_token, token_subject

# The test servers' secret is short on purpose (it signs nothing of value).
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def test_connection_token_is_valid_for_an_hour_and_takes_claims() -> None:
    token = make_token("42", channels=["news"])
    assert token_subject(token) == "42"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["channels"] == ["news"]
    assert 3590 <= claims["exp"] - time.time() <= 3600


def test_subscription_token_names_user_and_channel() -> None:
    claims = jwt.decode(subscription_token("7", "$room", ttl=60), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channel"]) == ("7", "$room")
    assert 50 <= claims["exp"] - time.time() <= 60


def test_subject_of_something_else_is_empty() -> None:
    assert token_subject("not a token") == ""
    assert token_subject("") == ""
