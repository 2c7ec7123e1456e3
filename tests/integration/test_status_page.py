"""The live status page in a real headless Chromium against the running feed.

Debian's ``/usr/bin/chromium`` is driven through Playwright's async API (never
``playwright install``). The page must show one row per connection and a ticks/s figure
that changes over time without a reload.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.integration.test_api import SettingsFor, poll, running_feed
from tests.integration.test_api_ratelimit import api_process
from tests.support.services import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM_PRESENT = CHROMIUM.exists()
# Where the screenshot goes (a reviewer looks at it); a tmp dir unless told otherwise.
SCREENSHOT_ENV = "ALPHAPANDA_TEST_SCREENSHOT"


@pytest.mark.slow
async def test_status_page_shows_connections_and_live_ticks_per_second(
    settings_for: SettingsFor, unique: str, tmp_path: Path
) -> None:
    assert CHROMIUM_PRESENT, "Debian's chromium is required (make test installs it)"
    async with (
        running_feed(settings_for, unique, sim_options={"ticks_per_second": 400}) as feed,
        async_playwright() as p,
    ):
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = await page.goto(feed.base_url + "/")
            assert response is not None and response.status == 200

            rows = page.locator("#connections tbody tr[data-shard]")
            await rows.first.wait_for(timeout=15_000)
            assert await rows.count() == 2
            # Both connections are shown connected, with their instruments.
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#connections tbody tr[data-shard]')]"
                ".filter(r => r.cells[1].textContent === 'connected').length === 2",
                timeout=15_000,
            )
            first = await rows.nth(0).locator("td").all_inner_texts()
            assert first[0] == "0" and first[3] == "50"

            # ticks/s is a number and changes over time without a reload.
            tps = page.locator("#tps")
            await page.wait_for_function(
                "() => /^[0-9][0-9,.]*$/.test(document.getElementById('tps').textContent)",
                timeout=15_000,
            )
            seen = {await tps.inner_text()}
            deadline = time.monotonic() + 20
            while len(seen) < 3 and time.monotonic() < deadline:
                await page.wait_for_timeout(500)  # a browser-side poll, not a test sleep
                seen.add(await tps.inner_text())
            assert len(seen) >= 3, f"ticks/s never changed: {seen}"
            assert all(float(v.replace(",", "")) > 0 for v in seen), seen

            assert (await page.locator("#ready").inner_text()) == "ready"
            assert (await page.locator("#source").inner_text()) == "live feed"
            assert await page.locator("#ha").is_hidden()  # not in a hot-standby group
            received = int((await page.locator("#received").inner_text()).replace(",", ""))
            assert received > 0
            assert not await page.locator("#error.show").count()
            assert errors == []

            shot = Path(os.environ.get(SCREENSHOT_ENV, tmp_path / "status_page.png"))
            image = await page.screenshot(path=str(shot), full_page=True)
            assert len(image) > 10_000
        finally:
            await browser.close()


@pytest.mark.slow
async def test_status_page_of_the_monitoring_process_shows_the_redis_figures(
    settings_for: SettingsFor, unique: str, tmp_path: Path
) -> None:
    async with running_feed(settings_for, unique) as feed:

        async def flushed() -> bool:
            response = await feed.http.get("/monitoring/pipeline")
            return response.status_code == 200 and bool(response.json()["connections"])

        await poll(flushed)
        with api_process(free_port(), unique) as monitor_url:

            async def up() -> bool:
                return (await feed.http.get(f"{monitor_url}/health")).status_code == 200

            await poll(up, within=30)
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    await page.goto(monitor_url + "/")
                    await page.wait_for_function(
                        "() => [...document.querySelectorAll('#connections tbody tr[data-shard]')]"
                        ".filter(r => r.cells[1].textContent === 'connected').length === 2",
                        timeout=15_000,
                    )
                    assert (await page.locator("#source").inner_text()) == "Redis snapshot"
                    assert (await page.locator("#ready").inner_text()) == "ready"
                    await page.wait_for_function(
                        "() => parseFloat(document.getElementById('tps').textContent"
                        ".replace(/,/g, '')) > 0",
                        timeout=15_000,
                    )
                    shot = os.environ.get(SCREENSHOT_ENV + "_MONITOR")
                    await page.screenshot(
                        path=shot or str(tmp_path / "monitor_page.png"), full_page=True
                    )
                finally:
                    await browser.close()
