"""Who is calling: API-key checks and the caller identity used for rate limiting.

Two rules drive this module:

* The API key is compared in constant time (``hmac.compare_digest``) and never kept
  anywhere but in the settings' ``SecretStr``. Rate-limit buckets are keyed on a
  SHA-256 digest of a *valid* key, so Redis never holds the key itself. An invalid
  key does not earn its own bucket (otherwise an attacker could rotate made-up keys to
  escape the limit while guessing); such callers are keyed on their address.
* The caller's address is the TCP peer. ``X-Forwarded-For`` is spoofable by anyone,
  so it is only believed when the peer itself is one of ``settings.api.trusted_proxies``
  (addresses or CIDR networks), and then only the right-most hop that is not a trusted
  proxy is taken — the left-most entries are whatever the client chose to write.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

API_KEY_HEADER = "X-API-Key"
FORWARDED_FOR_HEADER = "X-Forwarded-For"

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def key_matches(presented: str | None, expected: SecretStr) -> bool:
    """True only if ``presented`` equals the configured key (constant-time compare)."""
    secret = expected.get_secret_value()
    if presented is None or not secret:
        # An empty configured key must never mean "anyone may write".
        return False
    return hmac.compare_digest(presented.encode("utf-8"), secret.encode("utf-8"))


def key_fingerprint(key: str) -> str:
    """A stable, non-reversible name for a key (for rate-limit buckets and logs)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def parse_trusted_proxies(entries: Iterable[str]) -> tuple[_Network, ...]:
    """``("10.0.0.1", "192.168.0.0/16")`` → networks; raises ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _in_any(address: str, networks: tuple[_Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[_Network, ...]
) -> str:
    """The address a request really comes from.

    ``peer`` is the TCP peer (``request.client.host``); ``forwarded_for`` the raw
    ``X-Forwarded-For`` header, consulted only when the peer is a trusted proxy.
    """
    address = peer or "unknown"
    if not forwarded_for or not _in_any(address, trusted):
        return address
    # Walk from the right: each trusted hop vouches for the one before it; the first
    # untrusted hop is the client as far as our own proxies can tell.
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _in_any(hop, trusted):
            return hop if _is_ip(hop) else address
    return hops[0] if hops and _is_ip(hops[0]) else address


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who a request is, for rate limiting: ``key:<digest>`` or ``addr:<ip>``."""

    bucket: str
    authenticated: bool


def identify(
    headers: Mapping[str, str],
    peer: str | None,
    expected_key: SecretStr,
    trusted: tuple[_Network, ...],
) -> CallerIdentity:
    """The caller's rate-limit identity from its headers and TCP peer."""
    presented = headers.get(API_KEY_HEADER.lower()) or headers.get(API_KEY_HEADER)
    if presented is not None and key_matches(presented, expected_key):
        return CallerIdentity(f"key:{key_fingerprint(presented)}", authenticated=True)
    forwarded = headers.get(FORWARDED_FOR_HEADER.lower()) or headers.get(FORWARDED_FOR_HEADER)
    return CallerIdentity(f"addr:{client_address(peer, forwarded, trusted)}", authenticated=False)


def secret_values(*secrets: SecretStr) -> tuple[str, ...]:
    """The raw values to scrub from free text, with the password part of any URL."""
    values: list[str] = []
    for secret in secrets:
        raw = secret.get_secret_value()
        if not raw:
            continue
        values.append(raw)
        if "://" in raw:
            password = urlsplit(raw).password
            if password:
                values.append(password)
    # Longest first, so a URL is replaced whole before its password part is.
    return tuple(sorted(set(values), key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret value replaced by ``***`` (for free-text fields such as
    a connection's last disconnect reason, which may quote a URL with the token)."""
    for value in secrets:
        if len(value) >= 4:  # never mangle text over a trivially short "secret"
            text = text.replace(value, "***")
    return text
