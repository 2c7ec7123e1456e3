"""The simulator's credentials: handshake admission, expiry, Kite's login exchange."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from alphapanda.sim.sessions import LoginError, SessionBook


def book() -> SessionBook:
    return SessionBook("key", SecretStr("token-0"), SecretStr("secret"))


def checksum(api_key: str, request_token: str, secret: str = "secret") -> str:
    return hashlib.sha256((api_key + request_token + secret).encode()).hexdigest()


def test_admits_only_the_api_key_with_a_valid_token() -> None:
    sessions = book()
    assert sessions.admits("key", "token-0")
    assert not sessions.admits("key", "token-1")
    assert not sessions.admits("other", "token-0")
    assert not sessions.admits("ключ", "token-0")  # garbage never raises


def test_expiry_invalidates_every_token_until_one_is_accepted() -> None:
    sessions = book()
    sessions.accept("token-1")
    sessions.expire_all()
    assert not sessions.admits("key", "token-0")
    assert not sessions.admits("key", "token-1")
    sessions.accept("token-2")
    assert sessions.admits("key", "token-2")
    assert not sessions.admits("key", "token-0")
    assert sessions.expiries == 1


def test_login_issues_a_fresh_admitted_token_once_per_request_token() -> None:
    sessions = book()
    data = sessions.login("key", "rt", checksum("key", "rt"), "2026-11-25 09:15:00")
    assert data["login_time"] == "2026-11-25 09:15:00"
    assert data["api_key"] == "key"
    assert sessions.admits("key", data["access_token"])
    with pytest.raises(LoginError) as reused:
        sessions.login("key", "rt", checksum("key", "rt"), "2026-11-25 09:15:01")
    assert (reused.value.error_type, reused.value.status) == ("TokenException", 403)
    assert sessions.logins == 1


@pytest.mark.parametrize(
    ("api_key", "request_token", "sum_", "error_type"),
    [
        ("key", "rt", checksum("key", "rt", "wrong-secret"), "TokenException"),
        ("other", "rt", checksum("other", "rt"), "InputException"),
        ("key", "", checksum("key", ""), "TokenException"),
    ],
)
def test_login_refusals_are_kite_errors(
    api_key: str, request_token: str, sum_: str, error_type: str
) -> None:
    sessions = book()
    with pytest.raises(LoginError) as refused:
        sessions.login(api_key, request_token, sum_, "2026-11-25 09:15:00")
    assert refused.value.error_type == error_type
    assert refused.value.status == 403
    assert sessions.logins == 0
