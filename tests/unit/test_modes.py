"""The tick modes are defined once (``alphapanda.modes``) and every layer uses that."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from alphapanda.api.models import Mode as ApiMode
from alphapanda.kite.protocol import MODES as PROTOCOL_MODES
from alphapanda.modes import MODES, Mode
from alphapanda.registry.models import STREAM_MODES, StreamSubscriptionRow
from alphapanda.settings import SubscriptionMode

SRC = Path(__file__).resolve().parents[2] / "src" / "alphapanda"
# Three quoted mode names in a row, in any order: a second definition of the set.
_Q = "[\"']"
_NAME = rf"{_Q}(?:ltp|quote|full){_Q}"
SPELLED_OUT = re.compile(rf"{_NAME}\s*,\s*{_NAME}\s*,\s*{_NAME}")


def test_every_layer_uses_the_one_definition() -> None:
    assert MODES == ("ltp", "quote", "full")
    assert typing.get_args(Mode) == MODES
    assert ApiMode is Mode and SubscriptionMode is Mode
    assert PROTOCOL_MODES is MODES and STREAM_MODES is MODES
    [check] = [c for c in StreamSubscriptionRow.__table__.constraints if c.name == "ck_stream_mode"]
    assert str(check.sqltext) == "mode IN ('ltp', 'quote', 'full')"  # type: ignore[attr-defined]


def test_the_mode_set_is_spelled_out_nowhere_else() -> None:
    allowed = {SRC / "modes.py"}
    # A migration is history: it must keep the constraint it created, whatever the code says.
    allowed |= set((SRC / "db" / "migrations").rglob("*.py"))
    found = [
        f"{path.relative_to(SRC)}: {match.group(0)}"
        for path in sorted(SRC.rglob("*.py"))
        if path not in allowed
        for match in SPELLED_OUT.finditer(path.read_text())
    ]
    assert not found, found
