"""Refusing to run in production with the development defaults.

The defaults make ``make run`` work out of the box against the simulator and the local
dev stack, and every one of them is public (it is in this repository). A process that
is reachable by others — ``ALPHAPANDA_ENV=production``, or an API bound to anything but
loopback — must not start while one is still in force: ``insecure_settings`` names each
offending variable (never its value) and ``require_secure`` turns them into a
``SettingsError`` that the CLI prints before exiting 2.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from alphapanda.settings import Settings, SettingsError, env_name

Component = Literal["feed", "api", "auth"]

# The public development values shipped as defaults.
DEV_API_KEY = "dev-api-key"
DEV_KITE_API_KEY = "alphapanda-dev"
DEV_KITE_API_SECRET = "dev-api-secret"
DEV_KITE_ACCESS_TOKEN = "dev-access-token"
DEV_DB_PASSWORD = "dev-db-password"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; ``0.0.0.0`` and ``::`` are not."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def strict(settings: Settings, api_host: str | None) -> bool:
    """Whether dev defaults must be refused: production, or an API others can reach."""
    return settings.env == "production" or (api_host is not None and not is_loopback(api_host))


def insecure_settings(settings: Settings, component: Component) -> list[str]:
    """The variables of ``component`` that still hold a development default (or, for
    Redis away from loopback, no password)."""
    found: list[str] = []
    uses_kite = component in ("feed", "auth")
    uses_api = component in ("feed", "api")
    if uses_api and settings.api.api_key.get_secret_value() in ("", DEV_API_KEY):
        found.append(env_name(("api", "api_key")))
    if uses_kite:
        kite = settings.kite
        if kite.api_key == DEV_KITE_API_KEY:
            found.append(env_name(("kite", "api_key")))
        if kite.api_secret.get_secret_value() in ("", DEV_KITE_API_SECRET):
            found.append(env_name(("kite", "api_secret")))
        # An empty fallback token is fine (tokens then come from `auth login` only).
        if kite.access_token.get_secret_value() == DEV_KITE_ACCESS_TOKEN:
            found.append(env_name(("kite", "access_token")))
    db = urlsplit(settings.database.url.get_secret_value())
    db_open = db.password == DEV_DB_PASSWORD or (
        not db.password and not is_loopback(db.hostname or "")
    )
    if component in ("feed", "auth") and db_open:
        found.append(env_name(("database", "url")))
    redis = urlsplit(settings.redis.url.get_secret_value())
    if (
        component in ("feed", "api")
        and redis.scheme != "unix"
        and not redis.password
        and not is_loopback(redis.hostname or "")
    ):
        found.append(env_name(("redis", "url")))
    return found


def refusal_message(names: Iterable[str], why: str) -> str:
    shown = "\n".join(f"  {name}" for name in names)
    return (
        f"refusing to start ({why}) while these still hold a development default or no "
        f"secret:\n{shown}\nset them (e.g. in .env); see docs/operations.md, Security"
    )


def require_secure(settings: Settings, component: Component, api_host: str | None) -> None:
    """Raise ``SettingsError`` naming every dev-default secret when running strict."""
    if not strict(settings, api_host):
        return
    names = insecure_settings(settings, component)
    if names:
        why = (
            "ALPHAPANDA_ENV=production"
            if settings.env == "production"
            else f"the API listens on {api_host}, not loopback"
        )
        raise SettingsError(refusal_message(names, why))


def require_secure_sim(settings: Settings, *, exposed: bool, dev_secrets: dict[str, bool]) -> None:
    """The simulator's version: its secrets are options, named as such."""
    if settings.env != "production" and not exposed:
        return
    names = [name for name, insecure in dev_secrets.items() if insecure]
    if names:
        why = (
            "ALPHAPANDA_ENV=production"
            if settings.env == "production"
            else "the simulator listens on a non-loopback address"
        )
        raise SettingsError(refusal_message(names, why))
