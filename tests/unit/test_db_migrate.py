"""The migration helpers' own logic: the packaged alembic configuration, and what
``upgrade_connection`` sends before handing over to alembic (a per-schema lock, the
schema). Running the migrations is covered by the integration tests."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.sql.elements import TextClause

from alphapanda.db.migrate import ALEMBIC_INI, alembic_config, head_revision, upgrade_connection
from tests.support.scripted_db import Answer, ScriptedConnection

pytestmark = pytest.mark.unit


def test_the_alembic_configuration_is_packaged_and_aimed_at_the_schema() -> None:
    assert ALEMBIC_INI.is_file()
    config = alembic_config("test_m")
    assert config.attributes["schema"] == "test_m"
    assert config.config_file_name == str(ALEMBIC_INI)


def test_the_head_is_the_single_newest_revision_shipped() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("public"))
    assert scripts.get_heads() == [head_revision()]
    assert scripts.get_revision(head_revision()) is not None


def sent(db: ScriptedConnection) -> list[str]:
    return [str(statement) for statement in db.statements]


async def test_an_unsafe_schema_is_refused_before_anything_is_sent() -> None:
    db = ScriptedConnection()
    with pytest.raises(ValueError, match="invalid PostgreSQL schema name"):
        await upgrade_connection(db.conn, 'x"; DROP TABLE instruments; --')
    assert db.statements == [] and db.synced == []


async def test_the_upgrade_locks_per_schema_then_creates_it_then_migrates() -> None:
    db = ScriptedConnection([Answer(), Answer()])
    await upgrade_connection(db.conn, "test_m")
    assert all(isinstance(s, TextClause) for s in db.statements)
    assert sent(db) == [
        "SELECT pg_advisory_xact_lock(hashtext(:key))",
        'CREATE SCHEMA IF NOT EXISTS "test_m"',
    ]
    assert db.parameters == [{"key": "alphapanda.migrate.test_m"}, None]
    assert len(db.synced) == 1  # alembic's upgrade, run on the same connection


async def test_two_schemas_take_different_locks() -> None:
    keys: list[Any] = []
    for schema in ("test_a", "test_b"):
        db = ScriptedConnection([Answer(), Answer()])
        await upgrade_connection(db.conn, schema)
        keys.append(db.parameters[0])
    assert keys[0] != keys[1]


async def test_under_the_alembic_command_the_given_step_runs_instead() -> None:
    db = ScriptedConnection([Answer(), Answer()])

    def step(_: Any) -> None:
        return None

    await upgrade_connection(db.conn, "test_m", run=step)
    assert db.synced == [step]
