"""``/docs`` renders with no network: headless Chromium with every request that leaves
loopback refused, against a real ``alphapanda api`` process."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from playwright.async_api import Request, Route, async_playwright

from tests.integration.test_api import poll
from tests.integration.test_api_ratelimit import api_process
from tests.integration.test_status_page import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_PRESENT
from tests.support.services import free_port


async def test_docs_render_offline_from_assets_the_app_serves(unique: str) -> None:
    assert CHROMIUM_PRESENT, "Debian's chromium is required (make test installs it)"
    port = free_port()
    with api_process(port, unique) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            await poll(lambda: _up(http))
            page_html = (await http.get("/docs")).text
        assert "cdn.jsdelivr.net" not in page_html and "/docs/assets/" in page_html
        refused: list[str] = []
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()

                async def offline(route: Route, request: Request) -> None:
                    if urlsplit(request.url).hostname in ("127.0.0.1", "localhost"):
                        await route.continue_()
                    else:
                        refused.append(request.url)
                        await route.abort()

                await page.route("**/*", offline)
                await page.goto(f"{base_url}/docs")
                # Swagger UI rendered the document: the title and an operation of ours.
                await page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
                await page.wait_for_selector("text=/status", timeout=20_000)
                title = await page.inner_text(".swagger-ui .info .title")
            finally:
                await browser.close()
    assert "Alpha Panda market feed" in title
    assert refused == [], refused


async def _up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/health")).status_code == 200
    except httpx.TransportError:
        return False
