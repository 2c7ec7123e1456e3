"""Downloading Kite's instrument dump (``GET /instruments[/EXCHANGE]``).

Kite serves the whole dump (all exchanges, ~100k rows, a few MB) or one exchange's as
CSV, gzip-compressed when asked, to any request signed with
``Authorization: token api_key:access_token``. The standard library is enough: one
blocking request, run in a thread by the caller.
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from urllib.parse import quote

KITE_VERSION = "3"
FETCH_TIMEOUT = 60.0
# The full dump is ~10 MB uncompressed; refuse anything absurdly larger.
MAX_DUMP_BYTES = 256 * 1024 * 1024


class FetchError(Exception):
    """The dump could not be downloaded; the message says why (never the token)."""


def instruments_url(api_root: str, exchange: str | None = None) -> str:
    base = api_root.rstrip("/") + "/instruments"
    return f"{base}/{quote(exchange.upper(), safe='')}" if exchange else base


def fetch_instrument_dump(
    api_root: str,
    api_key: str,
    access_token: str,
    exchange: str | None = None,
    *,
    timeout: float = FETCH_TIMEOUT,
) -> str:
    """The dump's CSV text for one exchange, or for all when ``exchange`` is None."""
    url = instruments_url(api_root, exchange)
    request = urllib.request.Request(
        url,
        headers={
            "X-Kite-Version": KITE_VERSION,
            "Authorization": f"token {api_key}:{access_token}",
            "Accept-Encoding": "gzip",
            "User-Agent": "alphapanda",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_DUMP_BYTES + 1)
            encoding = str(response.headers.get("Content-Encoding", ""))
    except urllib.error.HTTPError as exc:
        raise FetchError(f"GET {url}: HTTP {exc.code} ({_kite_message(exc)})") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"GET {url}: {reason}") from None
    if len(body) > MAX_DUMP_BYTES:
        raise FetchError(f"GET {url}: answer larger than {MAX_DUMP_BYTES} bytes")
    if encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return body.decode("utf-8-sig")


def _kite_message(exc: urllib.error.HTTPError) -> str:
    """Kite's error envelope ``{"status": "error", "message": ...}``, if it sent one."""
    try:
        payload = json.loads(exc.read(65536) or b"{}")
    except (ValueError, OSError):
        payload = {}
    if isinstance(payload, dict) and payload.get("message"):
        return str(payload["message"])
    if exc.code == 403:
        return "token rejected or expired; run `alphapanda auth login`"
    return str(exc.reason or "error")
