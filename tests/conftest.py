"""Shared fixtures. Integration tests talk to the real local stack (``make services-up``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alphapanda.settings import Settings
from tests.support.services import (
    SHARED_DATABASE,
    SHARED_KAFKA,
    SHARED_REDIS,
    PrivateService,
    drop_schema,
)

# Tests never pick up a developer's .env or config file.
os.environ.pop("ALPHAPANDA_CONFIG_FILE", None)
for _name in list(os.environ):
    if _name.startswith("ALPHAPANDA_") and not _name.startswith("ALPHAPANDA_TEST_"):
        del os.environ[_name]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test is either a pure unit test or an integration test, by folder.
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif "unit" in path.parts:
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def unique() -> str:
    """A short unique id for topic prefixes, Redis key prefixes, schemas."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_for(tmp_path: Path, unique: str):  # type: ignore[no-untyped-def]
    """Build Settings pointed at the shared stack, isolated by a unique topic prefix."""

    def build(**groups: dict[str, object]) -> Settings:
        base: dict[str, dict[str, object]] = {
            "kafka": {"bootstrap_servers": SHARED_KAFKA, "topic_prefix": f"test.{unique}."},
            "redis": {"url": SHARED_REDIS},
            # Redis keys of this test only (metrics, rate-limit buckets): tests may run
            # side by side on the shared Redis.
            "metrics": {"namespace": f"test-{unique}"},
            "api": {"rate_limit_key_prefix": f"test-{unique}:ratelimit"},
            "database": {"url": SHARED_DATABASE},
            "feed": {"spool_dir": tmp_path / "spool", "wal_dir": tmp_path / "wal"},
        }
        for group, values in groups.items():
            base.setdefault(group, {}).update(values)
        return Settings(_env_file=None, **base)  # type: ignore[arg-type, call-arg]

    return build


@pytest.fixture
async def schema(unique: str) -> AsyncIterator[str]:
    """A private PostgreSQL schema on the shared database, dropped after the test."""
    name = f"test_{unique}"
    yield name
    await drop_schema(name)


def _private(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    service = PrivateService(name, tmp_path_factory.mktemp(f"private-{name}"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    """A broker of this test's own, which it may SIGKILL or SIGSTOP."""
    yield from _private("kafka", tmp_path_factory)


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    yield from _private("redis", tmp_path_factory)


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateService]:
    yield from _private("postgres", tmp_path_factory)
