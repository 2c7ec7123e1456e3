"""The CLI imports only the module of the command it runs; the map must cover them all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alphapanda.cli.app import COMMAND_MODULES, command_name, missing_bench_extra

pytestmark = pytest.mark.unit

_PROBE = """
import sys
from alphapanda.cli.app import _register, app
_register(sys.argv[1:])
names = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}
names |= {g.name or g.typer_instance.info.name for g in app.registered_groups}
heavy = sorted(m for m in ("fastapi", "sqlalchemy", "alembic") if m in sys.modules)
print(" ".join(sorted(names)) + "|" + " ".join(heavy))
"""


def _probe(*argv: str) -> tuple[set[str], set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout.strip()
    names, heavy = out.split("|")
    return set(names.split()), set(heavy.split())


def test_command_name_skips_root_options() -> None:
    assert command_name(["--env-file", "x.env", "doctor", "--json"]) == "doctor"
    assert command_name(["--env-file=x.env", "sim"]) == "sim"
    assert command_name(["--help"]) is None
    assert command_name([]) is None


def test_every_registered_command_is_in_the_map() -> None:
    names, _ = _probe()  # no command: every module
    assert names == set(COMMAND_MODULES)


def test_a_command_imports_only_its_own_module() -> None:
    names, heavy = _probe("sim", "--help")
    assert names == {"sim"}
    assert heavy == set()  # no web framework, no ORM for the simulator
    for command in COMMAND_MODULES:
        names, _ = _probe(command)
        assert command in names


def test_a_benchmark_without_its_optional_dependencies_says_how_to_install_them() -> None:
    # None in sys.modules makes an import raise ModuleNotFoundError, as on a plain install.
    script = (
        "import sys; sys.modules['psutil'] = None\n"
        "sys.argv = ['alphapanda', 'bench', 'burst', '--seconds', '1']\n"
        "from alphapanda.cli.app import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "psutil" in done.stderr and "pip install 'alphapanda[bench]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_only_a_missing_bench_module_under_bench_is_explained() -> None:
    def missing(name: str) -> ModuleNotFoundError:
        return ModuleNotFoundError(f"No module named {name!r}", name=name)

    assert missing_bench_extra(["bench", "soak"], missing("matplotlib")) == "matplotlib"
    assert missing_bench_extra(["--env-file", "x", "bench", "e2e"], missing("aiokafka"))
    assert missing_bench_extra(["bench", "soak"], missing("msgspec")) is None  # broken install
    assert missing_bench_extra(["doctor"], missing("psutil")) is None
