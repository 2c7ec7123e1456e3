"""Real services for tests: the shared local stack, and private instances a test may abuse.

The shared stack (``make services-up``) is used by most integration tests; each test
isolates itself by topic prefix / key prefix / schema. A test that kills, pauses or
stops a service starts a private one (``alphapanda.ops.devstack``) on free ports, so other
tests (and other developers' runs) are never disturbed.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import SecretStr

from alphapanda.db.engine import Database
from alphapanda.ops.devstack import DEVSTACK, DevstackService, free_port

__all__ = [
    "DEVSTACK",
    "ROOT",
    "SHARED_DATABASE",
    "SHARED_KAFKA",
    "SHARED_REDIS",
    "PrivateService",
    "children_of",
    "drop_schema",
    "free_port",
    "port_open",
    "process_alive",
]

ROOT = Path(__file__).resolve().parents[2]

SHARED_KAFKA = os.environ.get("ALPHAPANDA_TEST_KAFKA", "127.0.0.1:19092")
SHARED_REDIS = os.environ.get("ALPHAPANDA_TEST_REDIS", "redis://127.0.0.1:16379/0")
SHARED_DATABASE = os.environ.get(
    "ALPHAPANDA_TEST_DATABASE",
    "postgresql+asyncpg://alphapanda:dev-db-password@127.0.0.1:15432/alphapanda",
)

# One private kafka/redis/postgres: .start() .stop() .kill() .pause() .resume(), .bootstrap,
# .redis_url, .database_url, .pid.
PrivateService = DevstackService


async def drop_schema(name: str) -> None:
    """Drop a test's private schema on the shared database (and all in it)."""
    conn = await Database(SecretStr(SHARED_DATABASE)).connect_raw()
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the
    parent's pid); None for a process that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped, is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and (fields := _stat(int(entry.name))) is not None
        and fields[0] != "Z"
        and int(fields[1]) == pid
    ]
