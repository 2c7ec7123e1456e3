"""``alphapanda doctor`` and ``config show`` as an operator runs them (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, SHARED_REDIS, PrivateService

ALPHAPANDA = [sys.executable, "-m", "alphapanda"]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    full_env.update(
        ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=SHARED_KAFKA,
        ALPHAPANDA_REDIS__URL=SHARED_REDIS,
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        COLUMNS="200",
    )
    full_env.update(env)
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_reports_running_services_ok() -> None:
    result = run_cli("doctor")
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    for service in ("kafka", "redis", "postgres"):
        assert "OK" in rows[service], result.stdout


def test_doctor_reports_a_stopped_service_as_fail(private_redis: PrivateService) -> None:
    url = private_redis.redis_url
    assert "OK" in _row(run_cli("doctor", ALPHAPANDA_REDIS__URL=url), "redis")
    private_redis.stop()
    result = run_cli("doctor", ALPHAPANDA_REDIS__URL=url)
    row = _row(result, "redis")
    assert "FAIL" in row and ("refused" in row.lower() or "connect" in row.lower()), result.stdout
    assert result.returncode == 1


def _row(result: subprocess.CompletedProcess[str], service: str) -> str:
    for line in result.stdout.splitlines():
        cells = line.split("│")
        if len(cells) > 2 and cells[1].strip() == service:
            return line
    raise AssertionError(f"no row for {service}:\n{result.stdout}\n{result.stderr}")


def test_bad_settings_are_a_clear_error() -> None:
    result = run_cli("config", "show", ALPHAPANDA_KAFKA__LINGER_MS="soon")
    assert result.returncode == 2
    assert "ALPHAPANDA_KAFKA__LINGER_MS" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    result = run_cli(
        "config",
        "show",
        "--json",
        ALPHAPANDA_KITE__ACCESS_TOKEN="tok-abc-123",
        ALPHAPANDA_REDIS__URL="redis://:redis-pw-9@127.0.0.1:16379/0",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["kite"]["access_token"] == "********"
    assert shown["redis"]["url"] == "redis://:***@127.0.0.1:16379/0"
    assert "tok-abc-123" not in result.stdout and "redis-pw-9" not in result.stdout
