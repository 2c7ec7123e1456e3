"""The status page's instrument panel in headless Chromium: pick an instrument, see its
latest quote and a live candlestick chart (vendored lightweight-charts, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.integration.test_api import SettingsFor, running_feed
from tests.integration.test_status_page import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_PRESENT

SCREENSHOT_ENV = "ALPHAPANDA_TEST_SCREENSHOT_CHART"


@pytest.mark.slow
async def test_status_page_charts_the_chosen_instrument(
    settings_for: SettingsFor, unique: str, tmp_path: Path
) -> None:
    assert CHROMIUM_PRESENT, "Debian's chromium is required (make test installs it)"
    # 5-second bars so a few close within the test (the page charts 1m when built).
    async with (
        running_feed(
            settings_for,
            unique,
            sim_options={"ticks_per_second": 400},
            candles={"intervals": "5s"},
        ) as feed,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            external: list[str] = []
            page.on(
                "request",
                lambda r: external.append(r.url) if not r.url.startswith(feed.base_url) else None,
            )
            await page.goto(feed.base_url + "/")
            await page.locator("#market.show").wait_for(timeout=15_000)
            assert await page.locator("#chartinterval").text_content() in ("1m", "5s")
            options = await page.locator("#instrument option").count()
            assert options == len(feed.service.client.subscriptions())

            # Choose another instrument than the default one.
            tokens = sorted(feed.service.client.subscriptions())
            chosen = tokens[3]
            await page.select_option("#instrument", str(chosen))
            await page.wait_for_function(
                f"() => window.marketChart.token === {chosen} && window.marketChart.bars >= 3",
                timeout=40_000,
            )
            assert await page.locator("#chartinterval").text_content() == "5s"
            shown = float(await page.locator("#q-last").inner_text())
            quote = (await feed.http.get(f"/quotes/{chosen}")).json()
            # The page polls every 2 s: its price is a recent one of this instrument.
            assert abs(shown - quote["last_price"]) / quote["last_price"] < 0.05
            candles = (await feed.http.get(f"/candles/{chosen}")).json()
            assert candles["interval"] == "5s" and len(candles["bars"]) >= 2
            bars = int(await page.locator("#q-bars").inner_text())
            assert bars >= 3
            # The chart drew into its canvases.
            canvases = await page.locator("#chart canvas").count()
            assert canvases > 0
            assert errors == [] and external == []

            shot = Path(os.environ.get(SCREENSHOT_ENV, tmp_path / "status_chart.png"))
            await page.locator("#market").scroll_into_view_if_needed()
            image = await page.screenshot(path=str(shot), full_page=True)
            assert len(image) > 10_000
        finally:
            await browser.close()
