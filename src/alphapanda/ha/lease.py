"""Leadership of a hot-standby group: a PostgreSQL session-level advisory lock.

Whoever holds the lock is the active feed. The lock lives as long as the database
session that took it:

- the active process dies (SIGKILL, OOM): its socket closes and PostgreSQL frees the
  lock at once;
- the active is paused (SIGSTOP) or cut off from the database: the session was opened
  with ``idle_session_timeout`` = the lease, and the active renews it (one query) every
  quarter lease; a session idle for a whole lease is ended by the server, which frees
  the lock. The active itself gives up when it has not renewed for ``lease - margin``
  (it stops publishing before the server hands the lock on).

Who is in the group, the epoch (how many times leadership changed hands) and a
deliberate hand-over request live in two small tables, created on first use.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS ha_groups (
        group_name text PRIMARY KEY,
        epoch bigint NOT NULL,
        instance text NOT NULL,
        since timestamptz NOT NULL,
        handover_requested boolean NOT NULL DEFAULT false
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ha_members (
        group_name text NOT NULL,
        instance text NOT NULL,
        api_url text NOT NULL,
        backend_pid integer NOT NULL,
        joined_at timestamptz NOT NULL,
        PRIMARY KEY (group_name, instance)
    )
    """,
)


def lock_key(group: str) -> int:
    """The advisory lock id of ``group`` (a signed 64-bit int)."""
    digest = hashlib.sha256(f"alphapanda-ha:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://``) as a plain libpq DSN."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class Term:
    """One instance's leadership: its epoch and since when."""

    epoch: int
    since: datetime


class PgLease:
    """The group's lock, held (or waited for) on one dedicated database session."""

    def __init__(
        self, url: str, group: str, instance: str, api_url: str, lease_seconds: float
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self.group = group
        self.instance = instance
        self.api_url = api_url
        self.lease_seconds = lease_seconds
        self.key = lock_key(group)
        self._conn: Any = None
        self.held = False

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self.held = False
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self.lease_seconds * 2,
                server_settings={
                    # The lease: the server ends a session idle this long, freeing the lock.
                    "idle_session_timeout": str(int(self.lease_seconds * 1000)),
                    "application_name": f"alphapanda-ha {self.group}"[:63],
                },
            )
            for statement in _SCHEMA:
                await self._conn.execute(statement)
            await self._conn.execute(
                """
                INSERT INTO ha_members (group_name, instance, api_url, backend_pid, joined_at)
                VALUES ($1, $2, $3, pg_backend_pid(), now())
                ON CONFLICT (group_name, instance) DO UPDATE
                SET api_url = EXCLUDED.api_url, backend_pid = EXCLUDED.backend_pid,
                    joined_at = EXCLUDED.joined_at
                """,
                self.group,
                self.instance,
                self.api_url,
            )
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def try_acquire(self) -> Term | None:
        """Take the lock if it is free; the new term (epoch + 1) if taken."""
        conn = await self._connection()
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key)
        if not got:
            return None
        self.held = True
        row = await conn.fetchrow(
            """
            INSERT INTO ha_groups (group_name, epoch, instance, since)
            VALUES ($1, 1, $2, now())
            ON CONFLICT (group_name) DO UPDATE
            SET epoch = ha_groups.epoch + 1, instance = EXCLUDED.instance,
                since = EXCLUDED.since, handover_requested = false
            RETURNING epoch, since
            """,
            self.group,
            self.instance,
        )
        return Term(int(row["epoch"]), row["since"])

    async def renew(self) -> bool:
        """Prove the session alive (resets the server's idle timer); ``True`` when a
        hand-over was requested."""
        conn = await self._connection()
        if not self.held:
            raise ConnectionError("the lease's session was lost")
        requested = await conn.fetchval(
            "SELECT handover_requested FROM ha_groups WHERE group_name = $1", self.group
        )
        return bool(requested)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close(timeout=2)
        self._conn = None
        self.held = False


async def group_status(url: str, group: str) -> dict[str, Any]:
    """Who is in ``group`` (sessions alive), who holds the lock, the epoch."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        for statement in _SCHEMA:
            await conn.execute(statement)
        head = await conn.fetchrow(
            "SELECT epoch, instance, since, handover_requested FROM ha_groups "
            "WHERE group_name = $1",
            group,
        )
        members = await conn.fetch(
            """
            SELECT m.instance, m.api_url, m.joined_at,
                   EXISTS (SELECT 1 FROM pg_locks l
                           WHERE l.locktype = 'advisory' AND l.granted AND l.pid = m.backend_pid
                             AND ((l.classid::bigint << 32) | l.objid::bigint) = $2) AS holds_lock
            FROM ha_members m
            JOIN pg_stat_activity a ON a.pid = m.backend_pid
            WHERE m.group_name = $1
            ORDER BY m.joined_at
            """,
            group,
            lock_key(group),
        )
        return {
            "group": group,
            "epoch": int(head["epoch"]) if head else 0,
            "active": head["instance"] if head else None,
            "active_since": head["since"].isoformat() if head else None,
            "handover_requested": bool(head["handover_requested"]) if head else False,
            "members": [
                {
                    "instance": m["instance"],
                    "api_url": m["api_url"],
                    "joined_at": m["joined_at"].isoformat(),
                    "holds_lock": bool(m["holds_lock"]),
                }
                for m in members
            ],
        }
    finally:
        await conn.close()


async def request_handover(url: str, group: str) -> bool:
    """Ask the active of ``group`` to hand over; ``False`` if the group has no active."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        for statement in _SCHEMA:
            await conn.execute(statement)
        done = await conn.execute(
            "UPDATE ha_groups SET handover_requested = true WHERE group_name = $1", group
        )
        return bool(done.endswith(" 1"))
    finally:
        await conn.close()
