"""The browser half of the Kite login: the login page's URL, which redirect URLs may be
listened on (loopback only), and the one-shot callback server that captures the request
token. The server runs on a loopback port of this machine; no Kite, no simulator."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from alphapanda.auth.redirect import (
    KITE_LOGIN_URL,
    RedirectError,
    capture_request_token,
    listen_address,
    login_url,
)
from alphapanda.ops.devstack import free_port

pytestmark = pytest.mark.unit

DEADLINE = 10.0


# -- login_url ---------------------------------------------------------------------------


def test_the_kite_api_logs_in_on_kites_own_login_page() -> None:
    url = login_url("my key&x", "https://api.kite.trade")
    parts = urlsplit(url)
    assert url.startswith(KITE_LOGIN_URL + "?")
    assert parse_qs(parts.query) == {"v": ["3"], "api_key": ["my key&x"]}


def test_any_other_api_root_logs_in_on_that_root() -> None:
    url = login_url("k1", "http://127.0.0.1:18766")
    assert url == "http://127.0.0.1:18766/connect/login?v=3&api_key=k1"


def test_a_host_that_merely_contains_kites_name_is_not_kite() -> None:
    url = login_url("k1", "https://api.kite.trade.example.com")
    assert url.startswith("https://api.kite.trade.example.com/connect/login?")


# -- listen_address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redirect", "address"),
    [
        ("http://127.0.0.1:18770/kite/callback", ("127.0.0.1", 18770, "/kite/callback")),
        ("http://localhost:18770/cb", ("localhost", 18770, "/cb")),
        ("http://127.0.0.5:8000", ("127.0.0.5", 8000, "/")),
        ("http://[::1]:18770/cb", ("::1", 18770, "/cb")),
    ],
)
def test_a_loopback_redirect_url_is_listened_on(
    redirect: str, address: tuple[str, int, str]
) -> None:
    assert listen_address(redirect) == address


@pytest.mark.parametrize(
    "redirect",
    ["https://127.0.0.1:18770/cb", "http://127.0.0.1/cb", "127.0.0.1:18770", "http://:18770/cb"],
)
def test_a_redirect_url_that_is_not_http_host_and_port_is_refused(redirect: str) -> None:
    with pytest.raises(RedirectError, match=r"must be http://127\.0\.0\.1:PORT/PATH"):
        listen_address(redirect)


@pytest.mark.parametrize(
    "redirect",
    ["http://127.0.0.1:99999/cb", "http://127.0.0.1:abc/cb", "http://127.0.0.1:-1/cb"],
)
def test_a_redirect_url_with_an_impossible_port_is_refused_naming_the_setting(
    redirect: str,
) -> None:
    # The CLI turns a RedirectError into a clear message; any other error is a traceback.
    with pytest.raises(RedirectError, match="ALPHAPANDA_KITE__REDIRECT_URL must be"):
        listen_address(redirect)


@pytest.mark.parametrize(
    "redirect",
    [
        "http://0.0.0.0:18770/cb",
        "http://192.168.1.20:18770/cb",
        "http://example.com:18770/cb",
        "http://localhost.example.com:18770/cb",
    ],
)
def test_a_redirect_url_off_loopback_is_refused(redirect: str) -> None:
    with pytest.raises(RedirectError, match="must point at this machine's loopback"):
        listen_address(redirect)


# -- capture_request_token ---------------------------------------------------------------


async def get(port: int, target: str) -> tuple[int, str]:
    """One HTTP/1.1 GET against the callback server; its status code and body."""
    for _ in range(200):  # the server starts listening a moment after the capture starts
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except ConnectionRefusedError:
            await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"nothing listens on 127.0.0.1:{port}")
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_the_redirect_with_a_request_token_is_captured() -> None:
    port = free_port()
    capture = asyncio.create_task(
        capture_request_token(f"http://127.0.0.1:{port}/kite/callback", DEADLINE)
    )
    code, body = await get(port, "/kite/callback?action=login&status=success&request_token=rq1")
    assert code == 200 and "Logged in" in body
    assert await capture == "rq1"


async def test_other_requests_get_404_and_the_capture_keeps_waiting() -> None:
    port = free_port()
    capture = asyncio.create_task(capture_request_token(f"http://127.0.0.1:{port}/cb", DEADLINE))
    assert (await get(port, "/favicon.ico"))[0] == 404
    assert (await get(port, "/elsewhere?status=success&request_token=rq0"))[0] == 404
    assert (await get(port, "/cb"))[0] == 404  # the path, but neither token nor status
    assert not capture.done()
    assert (await get(port, "/cb?status=success&request_token=rq2"))[0] == 200
    assert await capture == "rq2"


@pytest.mark.parametrize(
    "query", ["status=cancelled", "status=success", "request_token=rq3&status=error"]
)
async def test_a_refused_login_fails_the_capture(query: str) -> None:
    port = free_port()
    capture = asyncio.create_task(capture_request_token(f"http://127.0.0.1:{port}/cb", DEADLINE))
    code, body = await get(port, f"/cb?{query}")
    assert code == 400 and "Login failed" in body
    with pytest.raises(RedirectError, match="Kite login refused"):
        await capture


async def test_no_redirect_in_time_is_a_timeout() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        await capture_request_token(f"http://127.0.0.1:{port}/cb", 0.2)


async def test_a_port_already_taken_is_named_in_the_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RedirectError, match=f"cannot listen on 127.0.0.1:{port}"):
            await capture_request_token(f"http://127.0.0.1:{port}/cb", DEADLINE)
    finally:
        server.close()
        await server.wait_closed()


async def test_the_server_is_closed_once_the_token_is_captured() -> None:
    port = free_port()
    capture = asyncio.create_task(capture_request_token(f"http://127.0.0.1:{port}/cb", DEADLINE))
    await get(port, "/cb?status=success&request_token=rq4")
    await capture
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
