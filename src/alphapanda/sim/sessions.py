"""Who may connect: the simulator's API key, its valid access tokens, and Kite's login.

Pure bookkeeping (no sockets, no clock): the WebSocket handshake asks
:meth:`SessionBook.admits`, the admin API expires and adds tokens, and
:meth:`SessionBook.login` is Kite's ``POST /session/token`` exchange — the request
token plus ``checksum = sha256(api_key + request_token + api_secret)`` buys a fresh
access token that the ticker accepts at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from pydantic import SecretStr


class LoginError(Exception):
    """A refused session request, carried to the client as Kite's error envelope."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also accepts non-ASCII input (a client's garbage)."""
    return hmac.compare_digest(given.encode(), expected.encode())


class SessionBook:
    """The API key, the access tokens accepted at the handshake, used request tokens."""

    def __init__(self, api_key: str, access_token: SecretStr, api_secret: SecretStr) -> None:
        self.api_key = api_key
        self._api_secret = api_secret
        self._valid = {access_token.get_secret_value()}
        # Kite's request tokens are single-use; so are ours.
        self._used_request_tokens: set[str] = set()
        self.logins = 0
        self.expiries = 0

    def admits(self, api_key: str, access_token: str) -> bool:
        """May a client with these credentials open a ticker connection?"""
        return _same(api_key, self.api_key) and access_token in self._valid

    def expire_all(self) -> None:
        """Every token issued so far stops working (as at 06:00 IST)."""
        self._valid.clear()
        self.expiries += 1

    def accept(self, access_token: str) -> None:
        self._valid.add(access_token)

    def login(
        self, api_key: str, request_token: str, checksum: str, login_time: str
    ) -> dict[str, Any]:
        """Exchange a request token for a session; ``login_time`` as Kite formats it
        (``YYYY-MM-DD HH:MM:SS``). Raises :class:`LoginError` as Kite would refuse."""
        if not _same(api_key, self.api_key):
            raise LoginError("InputException", "Invalid `api_key`.", 403)
        secret = self._api_secret.get_secret_value()
        expected = hashlib.sha256((api_key + request_token + secret).encode()).hexdigest()
        if not _same(checksum, expected):
            raise LoginError("TokenException", "Invalid `checksum`.", 403)
        if not request_token or request_token in self._used_request_tokens:
            raise LoginError("TokenException", "Token is invalid or has expired.", 403)
        self._used_request_tokens.add(request_token)
        access_token = secrets.token_hex(16)
        self._valid.add(access_token)
        self.logins += 1
        return {
            "user_type": "individual",
            "email": "sim@alphapanda.invalid",
            "user_name": "Alpha Panda Simulator",
            "user_shortname": "Simulator",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "BSE", "NFO", "CDS", "BCD", "MCX"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "user_id": "AP0001",
            "api_key": api_key,
            "access_token": access_token,
            "public_token": secrets.token_hex(16),
            "refresh_token": "",
            "enctoken": secrets.token_hex(16),
            "login_time": login_time,
            "meta": {"demat_consent": "physical"},
        }
