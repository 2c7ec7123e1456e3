"""The runtime dependencies are what the feed imports: nothing declared and unused.

Tooling (benchmarks, tests) brings its own packages through the ``test`` extra; a
runtime dependency nobody imports only grows the image and the attack surface.
"""

from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "alphapanda"
# Inside the package for now, but tooling, not the feed.
TOOLING = (PACKAGE / "bench",)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        _normalise(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if any(path.is_relative_to(folder) for folder in TOOLING):
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
    unused = _declared() - used
    assert not unused, f"declared in [project.dependencies] but never imported: {sorted(unused)}"


def test_the_check_sees_real_imports() -> None:
    # Guard against a check that passes because it found nothing.
    names = _imported_top_levels()
    assert {"confluent_kafka", "msgspec", "websockets", "sqlalchemy"} <= names
    assert "psutil" not in names  # only the benchmarks measure processes


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
