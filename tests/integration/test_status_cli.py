"""``alphapanda status --once`` as an operator runs it, against the running feed's API and
against the Redis snapshot."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.integration.test_api import RunningFeed, SettingsFor, poll, running_feed


async def run_status(feed: RunningFeed | None, *args: str) -> tuple[int, str, str]:
    """The CLI in a subprocess (asynchronously: the feed runs in this event loop)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    env["COLUMNS"] = "200"
    if feed is not None:
        env.update(
            ALPHAPANDA_REDIS__URL=feed.settings.redis.url.get_secret_value(),
            ALPHAPANDA_METRICS__NAMESPACE=feed.settings.metrics.namespace,
        )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alphapanda",
        "--env-file",
        "/nonexistent",
        "status",
        "--once",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def connection_rows(output: str) -> dict[str, list[str]]:
    """shard → cells of the connections table (rich draws cells between │)."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 8 and cells[0].isdigit():
            rows[cells[0]] = cells
    return rows


async def test_status_once_prints_one_row_per_connection_from_the_api(
    settings_for: SettingsFor, unique: str
) -> None:
    async with running_feed(settings_for, unique) as feed:
        code, out, err = await run_status(feed, "--url", feed.base_url, "--source", "api")
        assert code == 0, err
        rows = connection_rows(out)
        assert set(rows) == {"0", "1"}, out
        for cells in rows.values():
            assert cells[1] == "connected"
            assert cells[3] == "50"  # instruments
        assert "ticks/s" in out
        assert "source" in out and "feed" in out
        assert "ready" in out and "yes" in out


async def test_status_once_reads_the_redis_snapshot_with_the_right_namespace(
    settings_for: SettingsFor, unique: str
) -> None:
    async with running_feed(settings_for, unique) as feed:

        async def flushed() -> bool:
            response = await feed.http.get("/monitoring/pipeline")
            return response.status_code == 200 and bool(response.json()["connections"])

        await poll(flushed)
        code, out, err = await run_status(feed, "--source", "redis")
        assert code == 0, err
        rows = connection_rows(out)
        assert set(rows) == {"0", "1"}, out
        assert all(cells[1] == "connected" for cells in rows.values())
        assert "redis" in out


async def test_status_once_fails_clearly_when_nothing_answers() -> None:
    code, _, err = await run_status(None, "--url", "http://127.0.0.1:9", "--source", "api")
    assert code == 1
    assert "status unavailable" in err and "127.0.0.1:9" in err
