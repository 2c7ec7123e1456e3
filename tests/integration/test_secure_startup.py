"""Production mode and start-up errors, as an operator meets them: the real CLI in a
subprocess, its exit code and its stderr."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alphapanda.pipeline.spool import LOCK_NAME as SPOOL_LOCK_NAME
from tests.support.services import SHARED_DATABASE, SHARED_KAFKA, SHARED_REDIS, free_port

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "data" / "instruments.csv"
ALPHAPANDA = [sys.executable, "-m", "alphapanda"]

# Values a production operator would set; none of them may ever be printed.
PROD_SECRETS = {
    "ALPHAPANDA_API__API_KEY": "prod-key-5b1d",
    "ALPHAPANDA_KITE__API_KEY": "kiteapp42",
    "ALPHAPANDA_KITE__API_SECRET": "prod-secret-77a",
    "ALPHAPANDA_KITE__ACCESS_TOKEN": "",
    "ALPHAPANDA_DATABASE__URL": SHARED_DATABASE.replace("dev-db-password", "not-dev-pw"),
}


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    full_env.update(
        ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS=SHARED_KAFKA,
        ALPHAPANDA_REDIS__URL=SHARED_REDIS,
        ALPHAPANDA_DATABASE__URL=SHARED_DATABASE,
        COLUMNS="200",
        # The code of this tree, also when the venv was installed from another checkout.
        PYTHONPATH=os.pathsep.join((str(ROOT / "src"), str(ROOT))),
    )
    full_env.update(env)
    return subprocess.run(
        [*ALPHAPANDA, "--env-file", "/nonexistent", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _assert_clear_error(result: subprocess.CompletedProcess[str], *names: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    for name in names:
        assert name in result.stderr, (name, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 8, result.stderr


# -- production mode ---------------------------------------------------------------------


def test_feed_in_production_refuses_every_dev_default_and_names_it() -> None:
    result = run_cli("feed", "--run-for", "1", ALPHAPANDA_ENV="production")
    _assert_clear_error(
        result,
        "ALPHAPANDA_API__API_KEY",
        "ALPHAPANDA_KITE__API_KEY",
        "ALPHAPANDA_KITE__API_SECRET",
        "ALPHAPANDA_KITE__ACCESS_TOKEN",
        "ALPHAPANDA_DATABASE__URL",
    )
    for value in ("dev-api-key", "dev-api-secret", "dev-access-token", "dev-db-password"):
        assert value not in result.stderr


def test_feed_in_production_names_only_what_is_still_a_dev_default() -> None:
    env = {**PROD_SECRETS, "ALPHAPANDA_API__API_KEY": "dev-api-key"}
    result = run_cli("feed", "--run-for", "1", ALPHAPANDA_ENV="production", **env)
    _assert_clear_error(result, "ALPHAPANDA_API__API_KEY")
    assert "ALPHAPANDA_KITE__API_SECRET" not in result.stderr
    for value in PROD_SECRETS.values():
        if value:
            assert value not in result.stderr


def test_an_api_on_a_public_address_is_strict_even_in_development() -> None:
    result = run_cli("api", "--host", "0.0.0.0", "--port", str(free_port()))
    _assert_clear_error(result, "ALPHAPANDA_API__API_KEY", "not loopback")
    # Redis without a password away from loopback is refused too.
    result = run_cli(
        "api",
        "--port",
        str(free_port()),
        ALPHAPANDA_ENV="production",
        ALPHAPANDA_API__API_KEY="k-0123456789",
        ALPHAPANDA_REDIS__URL="redis://cache.internal:6379/0",
    )
    _assert_clear_error(result, "ALPHAPANDA_REDIS__URL")
    assert "ALPHAPANDA_API__API_KEY" not in result.stderr


def test_the_simulator_refuses_dev_secrets_when_exposed_or_in_production() -> None:
    exposed = run_cli("sim", "--host", "0.0.0.0", "--port", "0", "--admin-port", "0")
    _assert_clear_error(exposed, "--access-token", "--api-secret")
    admin_exposed = run_cli(
        "sim",
        "--admin-host",
        "0.0.0.0",
        "--port",
        "0",
        "--admin-port",
        "0",
        ALPHAPANDA_SIM_ACCESS_TOKEN="tok-prod-1",
        ALPHAPANDA_SIM_API_SECRET="sec-prod-1",
    )
    _assert_clear_error(admin_exposed, "--admin-token")
    assert "tok-prod-1" not in admin_exposed.stderr


def test_production_with_real_secrets_starts(tmp_path: Path) -> None:
    # The refusal is not unconditional: with every secret set the feed runs and stops.
    result = run_cli(
        "feed",
        "--run-for",
        "1",
        "--no-api",
        "--no-metrics",
        "--no-registry",
        ALPHAPANDA_ENV="production",
        ALPHAPANDA_FEED__SPOOL_DIR=str(tmp_path / "spool"),
        ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(CSV),
        ALPHAPANDA_KITE__WS_URL=f"ws://127.0.0.1:{free_port()}",
        ALPHAPANDA_KAFKA__TOPIC_PREFIX=f"prodstart{os.getpid()}.",
        **PROD_SECRETS,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# -- start-up errors ---------------------------------------------------------------------


def test_missing_csv_from_another_directory_names_the_setting_and_where_it_looked(
    tmp_path: Path,
) -> None:
    # A relative CSV path, as in a .env written for the checkout, used from elsewhere.
    relative = {"ALPHAPANDA_FEED__INSTRUMENTS_CSV": "data/instruments.csv"}
    result = run_cli("feed", "--run-for", "1", cwd=tmp_path, **relative)
    _assert_clear_error(result, "ALPHAPANDA_FEED__INSTRUMENTS_CSV", str(tmp_path / "data"))
    assert "working directory" in result.stderr
    # ALPHAPANDA_HOME is the documented base, and it is what makes the same command work.
    home = run_cli(
        "feed", "--run-for", "1", cwd=tmp_path, ALPHAPANDA_HOME=str(tmp_path / "h"), **relative
    )
    _assert_clear_error(home, "ALPHAPANDA_HOME", str(tmp_path / "h" / "data" / "instruments.csv"))


@pytest.mark.parametrize(
    "command", [("e2e", "--seconds", "1"), ("soak", "--minutes", "1"), ("chaos",), ("derived",)]
)
def test_a_benchmark_away_from_the_checkout_names_the_missing_universe(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # The benchmarks stream the simulator's universe (data/instruments.csv of the
    # checkout); run from elsewhere they said so with a traceback.
    result = run_cli("bench", *command, cwd=tmp_path)
    _assert_clear_error(result, "ALPHAPANDA_FEED__INSTRUMENTS_CSV", str(tmp_path / "data"))


def test_traceback_only_with_debug_logging(tmp_path: Path) -> None:
    result = run_cli(
        "feed",
        "--run-for",
        "1",
        cwd=tmp_path,
        ALPHAPANDA_LOG__LEVEL="DEBUG",
        ALPHAPANDA_FEED__INSTRUMENTS_CSV="data/instruments.csv",
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "ALPHAPANDA_FEED__INSTRUMENTS_CSV" in result.stderr


def test_unreadable_csv(tmp_path: Path) -> None:
    # A directory where the file should be (root reads any file, so permissions cannot
    # make one unreadable here).
    result = run_cli("feed", ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(tmp_path))
    _assert_clear_error(result, "ALPHAPANDA_FEED__INSTRUMENTS_CSV", "not a file")


def test_spool_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(
        "feed",
        "--no-api",
        ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(CSV),
        ALPHAPANDA_FEED__SPOOL_DIR=str(blocker / "spool"),
    )
    _assert_clear_error(result, "ALPHAPANDA_FEED__SPOOL_DIR", "cannot create")


def test_spool_dir_locked_by_another_feed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # Held the way a running feed's spool holds it: its lock file, with its pid inside.
    fd = os.open(spool / SPOOL_LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        result = run_cli(
            "feed",
            "--no-api",
            ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(CSV),
            ALPHAPANDA_FEED__SPOOL_DIR=str(spool),
        )
    finally:
        os.close(fd)
    _assert_clear_error(
        result, "ALPHAPANDA_FEED__SPOOL_DIR", "locked by another running feed", "pid 4242"
    )


@pytest.mark.parametrize("command", ["feed", "api"])
def test_api_port_in_use(tmp_path: Path, command: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(
            command,
            ALPHAPANDA_API__PORT=str(port),
            ALPHAPANDA_FEED__INSTRUMENTS_CSV=str(CSV),
            ALPHAPANDA_FEED__SPOOL_DIR=str(tmp_path / "spool"),
        )
    _assert_clear_error(result, "ALPHAPANDA_API__PORT", "already in use")


def test_unreachable_database_for_a_command_that_needs_it() -> None:
    url = f"postgresql+asyncpg://alphapanda:pw@127.0.0.1:{free_port()}/alphapanda"
    result = run_cli("auth", "set-token", "tok-9f8e7d", ALPHAPANDA_DATABASE__URL=url)
    _assert_clear_error(result, "ALPHAPANDA_DATABASE__URL", "cannot reach PostgreSQL")
    assert ":pw@" not in result.stderr


def test_missing_config_file() -> None:
    result = run_cli("config", "show", ALPHAPANDA_CONFIG_FILE="/nonexistent/alphapanda.toml")
    _assert_clear_error(result, "ALPHAPANDA_CONFIG_FILE")
