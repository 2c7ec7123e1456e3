"""Property-based API testing with schemathesis (v4 CLI) against live servers: the feed's
API (with the API key, so the mutating routes are exercised too) and ``alphapanda api``.

Every check runs (server errors, status codes, content types, headers, response schemas,
negative-data rejection, Allow headers, auth) except ``positive_data_acceptance``: a
schema-valid token that is not a known instrument is rejected with 422 by design.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.integration.test_api import API_KEY, SettingsFor, poll, running_feed
from tests.integration.test_api_ratelimit import api_process
from tests.support.services import free_port

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = "30"


async def run_schemathesis(base_url: str, workdir: Path, *extra: str) -> tuple[int, str]:
    """The CLI in ``workdir`` (it keeps a ``.schemathesis/`` cache where it runs)."""
    proc = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "20261125",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=workdir,
    )
    async with asyncio.timeout(240):
        output, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, output.decode(errors="replace")


async def test_schemathesis_finds_nothing_in_the_feeds_api(
    settings_for: SettingsFor, unique: str, tmp_path: Path
) -> None:
    # The body limit would answer 413 before the schema's maxItems is checked (tested on
    # its own in test_api_isolation); here the schema is what is under test.
    api = {"max_body_bytes": 1 << 20}
    async with running_feed(settings_for, unique, connections=1, api=api) as feed:
        code, output = await run_schemathesis(
            feed.base_url, tmp_path, "-H", f"X-API-Key: {API_KEY}"
        )
        assert code == 0, output[-6000:]
        assert "Server error" not in output
        # The mutating routes were really exercised (with the key), not just listed.
        assert "POST /subscriptions" in output or "Tested: 9" in output
        # The feed survived the fuzzing.
        assert (await feed.http.get("/health")).status_code == 200


async def test_schemathesis_finds_nothing_in_the_monitoring_api(
    settings_for: SettingsFor, unique: str, tmp_path: Path
) -> None:
    # A feed flushes metrics into the namespace the monitor reads: without data the
    # monitoring routes answer 503 by design, which schemathesis counts as a server error.
    async with running_feed(settings_for, unique, connections=1) as feed:

        async def flushed() -> bool:
            return (await feed.http.get("/monitoring/pipeline")).status_code == 200

        await poll(flushed)
        with api_process(
            free_port(),
            unique,
            ALPHAPANDA_API__RATE_LIMIT="100000/minute",
            ALPHAPANDA_API__RATE_LIMIT_MUTATING="100000/minute",
        ) as base_url:

            async def up() -> bool:
                return (await feed.http.get(f"{base_url}/health")).status_code == 200

            await poll(up, within=30)
            code, output = await run_schemathesis(base_url, tmp_path)
        assert code == 0, output[-6000:]
        assert "Server error" not in output
