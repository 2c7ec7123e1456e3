"""The runtime dependencies are what the feed imports: nothing declared and unused.

Tooling brings its own packages: the benchmarks through the ``bench`` extra, the tests
through ``test``; a runtime dependency nobody imports only grows the image and the
attack surface.
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

from alphapanda.cli.app import BENCH_EXTRA_MODULES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "alphapanda"
# Inside the package for now, but tooling, not the feed.
TOOLING = (PACKAGE / "bench",)
# Loaded by name by another library rather than imported: uvicorn's http="httptools".
LOADED_BY_NAME = {"httptools"}
# The official client's WebSocket stack (kiteconnect requires autobahn[twisted]); the
# baseline benchmark drives its reactor.
BROUGHT_BY_KITECONNECT = {"autobahn", "twisted"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(specs: list[str]) -> set[str]:
    return {_normalise(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in specs}


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _declared() -> set[str]:
    return _names(_project()["dependencies"])


def _imported_top_levels(*, tooling: bool = False) -> set[str]:
    """Top-level modules imported by the feed (``tooling``: by the benchmarks)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if any(path.is_relative_to(folder) for folder in TOOLING) != tooling:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_by_the_feed() -> None:
    distributions = packages_distributions()
    used = {
        _normalise(dist) for name in _imported_top_levels() for dist in distributions.get(name, ())
    }
    unused = _declared() - used - LOADED_BY_NAME
    assert not unused, f"declared in [project.dependencies] but never imported: {sorted(unused)}"


def test_the_check_sees_real_imports() -> None:
    # Guard against a check that passes because it found nothing.
    names = _imported_top_levels()
    assert {"confluent_kafka", "msgspec", "websockets", "sqlalchemy"} <= names
    assert "psutil" not in names  # only the benchmarks measure processes


def test_the_bench_extra_holds_what_the_benchmarks_import_beyond_the_feed() -> None:
    distributions = packages_distributions()
    used = {
        _normalise(dist)
        for name in _imported_top_levels(tooling=True)
        for dist in distributions.get(name, ())
    }
    extra = _names(_project()["optional-dependencies"]["bench"])
    assert "psutil" in used  # the check sees the benchmarks' imports
    assert used - _declared() - BROUGHT_BY_KITECONNECT - {"alphapanda"} == extra
    # The CLI names these when a benchmark cannot import one of them.
    assert {_normalise(m) for m in BENCH_EXTRA_MODULES} == extra
    assert "alphapanda[bench]" in _project()["optional-dependencies"]["test"]


def test_the_feed_does_not_import_its_test_helpers() -> None:
    helpers = PACKAGE / "testing"
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.is_relative_to(helpers):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(PACKAGE)}: {m}"
                for m in modules
                if m.startswith("alphapanda.testing")
            ]
    assert not offenders, offenders
