"""Every setting is described in the README's table; the real-account marks are real."""

from __future__ import annotations

from alphapanda.ops.config_docs import DESCRIPTIONS, REAL_ACCOUNT
from alphapanda.ops.config_table import config_table, missing_descriptions, setting_fields


def test_every_setting_has_a_description() -> None:
    # Add the new setting to alphapanda.ops.config_docs.DESCRIPTIONS.
    assert missing_descriptions() == []


def test_real_account_marks_name_existing_settings() -> None:
    variables = {variable for variable, *_ in setting_fields()}
    assert variables >= REAL_ACCOUNT
    table = config_table()
    for variable in REAL_ACCOUNT:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{variable}`"))
        assert row.endswith("| **must set** |"), row
    assert table.count("**must set**") == len(REAL_ACCOUNT)


def test_allowed_values_come_from_the_types() -> None:
    rows = {line.split("|")[1].strip(" `"): line for line in config_table().splitlines()[2:]}
    assert "`live`, `sim`" in rows["ALPHAPANDA_KITE__ENV"]
    assert "| 1–3 |" in rows["ALPHAPANDA_KITE__MAX_CONNECTIONS"]
    assert "`block`, `drop_oldest`, `conflate`" in rows["ALPHAPANDA_FEED__BUFFER_POLICY"]
    assert all(DESCRIPTIONS[v] in rows[v] for v in rows)
