"""Kite authentication: the login flow, token persistence and expiry."""

from alphapanda.auth.broker import BrokerAuthenticator
from alphapanda.auth.expiry import token_expiry
from alphapanda.auth.service import AuthRequired, AuthService, AuthStatus, LoginFailed, TokenExpired

__all__ = [
    "AuthRequired",
    "AuthService",
    "AuthStatus",
    "BrokerAuthenticator",
    "LoginFailed",
    "TokenExpired",
    "token_expiry",
]
