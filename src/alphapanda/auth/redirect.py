"""The daily Kite login as a browser round trip.

Kite's login page, once the user has logged in, redirects the browser to the app's
registered redirect URL with ``?request_token=...&status=success``. ``capture_request_token``
listens on that URL (loopback only: the token is a credential, and the browser that
completes the login runs on this machine) and returns the token, so
``alphapanda auth login`` can exchange it without anyone copying it from the address bar.
"""

from __future__ import annotations

import asyncio
import ipaddress
from urllib.parse import parse_qs, urlencode, urlsplit

KITE_LOGIN_URL = "https://kite.zerodha.com/connect/login"
KITE_API_HOST = "api.kite.trade"

_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Alpha Panda login</title>"
    "<body style='font-family:sans-serif'><h2>{title}</h2><p>{detail}</p>"
)


class RedirectError(Exception):
    """The redirect URL cannot be listened on, or the login came back refused."""


def login_url(api_key: str, api_root: str) -> str:
    """Kite's login page for ``api_key`` (the simulator's when ``api_root`` is not Kite)."""
    base = (
        KITE_LOGIN_URL
        if urlsplit(api_root).hostname == KITE_API_HOST
        else f"{api_root}/connect/login"
    )
    return f"{base}?{urlencode({'v': '3', 'api_key': api_key})}"


def listen_address(redirect_url: str) -> tuple[str, int, str]:
    """``(host, port, path)`` to listen on; the host must be a loopback address."""
    parts = urlsplit(redirect_url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of 0-65535
        port = None
    if parts.scheme != "http" or not parts.hostname or not port:
        raise RedirectError(
            f"ALPHAPANDA_KITE__REDIRECT_URL must be http://127.0.0.1:PORT/PATH, not {redirect_url!r}"
        )
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise RedirectError(
            "ALPHAPANDA_KITE__REDIRECT_URL must point at this machine's loopback "
            f"(e.g. http://127.0.0.1:18770/kite/callback), not {host}"
        )
    return host, port, parts.path or "/"


async def capture_request_token(redirect_url: str, within: float) -> str:
    """Serve ``redirect_url`` until Kite's redirect arrives; return its request token.

    Raises ``RedirectError`` (port taken, login refused) or ``TimeoutError`` after
    ``within`` seconds.
    """
    host, port, path = listen_address(redirect_url)
    loop = asyncio.get_running_loop()
    result: asyncio.Future[str] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            target = urlsplit(parts[1]) if len(parts) >= 2 else urlsplit("/")
            query = parse_qs(target.query)
            token = (query.get("request_token") or [""])[0]
            status = (query.get("status") or [""])[0]
            if target.path != path or not (token or status):
                _respond(writer, 404, "Not found", "This is not the login callback.")
            elif status != "success" or not token:
                _respond(writer, 400, "Login failed", f"Kite answered status={status!r}.")
                if not result.done():
                    result.set_exception(RedirectError(f"Kite login refused (status={status!r})"))
            else:
                _respond(writer, 200, "Logged in", "You can close this tab.")
                if not result.done():
                    result.set_result(token)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise RedirectError(
            f"cannot listen on {host}:{port} for ALPHAPANDA_KITE__REDIRECT_URL ({exc.strerror})"
        ) from None
    async with server:
        async with asyncio.timeout(within):
            return await result


def _respond(writer: asyncio.StreamWriter, code: int, title: str, detail: str) -> None:
    body = _PAGE.format(title=title, detail=detail).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[code]
    writer.write(
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
