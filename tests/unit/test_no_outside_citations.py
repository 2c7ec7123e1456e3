"""The repository explains itself: no text cites sections or requirement ids of a
document the repository does not contain.

Such citations rot: a reader cannot follow them, and the reason behind the code is lost
with the outside document. Code, tests, docs and scripts say the reason in their own
words instead. This test reads every text file under ``src``, ``tests``, ``docs`` and
``scripts`` plus the top-level README, Makefile and pyproject, and fails on any
citation, with the file, line and text of each.

The patterns are built from pieces so that this file, which is scanned too, does not
cite anything itself; the examples below are written with ``#`` between letter and
digit for the same reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("src", "tests", "docs", "scripts")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
SKIPPED_DIRS = {"__pycache__", "node_modules", "target"}

_SECTION_SIGN = "\u00a7"
_DOCUMENT = "S" + "PEC"
# The requirement ids the outside document used. As words only: "K1" inside an
# identifier or a longer token (``K1ABC``, ``api1_key``) is not a citation.
_ID = r"\b(?:SEC1|OPS1|API[12]|P1|S1|C[1-4]|F[12]|B1|K[1-4]|M[12]|A1|R1|O[12]|W1|D[1-5])\b"
_ITEM = rf"(?:{_ID}|{_SECTION_SIGN}\s*\d+(?:\.\d+)*)"
_RANGE = rf"{_ITEM}(?:\s*[-–]\s*{_ITEM})?"
_LIST = rf"{_RANGE}(?:\s*,\s*{_RANGE})*"

CITATION = re.compile(
    "|".join(
        (
            rf"\b{_DOCUMENT}\b",  # the document by name
            _SECTION_SIGN,  # any section sign
            rf"\(\s*{_LIST}\s*\)",  # "(K#2)", "(K#1-K#3)", "(API#1, M#1, M#2)"
            rf"{_RANGE}(?:\s*,\s*{_RANGE})+",  # a bare list: "K#3, K#2"
            rf"{_ID}\s+(?:identity|requirement|invariant|condition|rule)\b",  # "the K#2 identity"
        )
    )
)


def _example(text: str) -> str:
    return text.replace("#", "").replace("DOC", _DOCUMENT).replace("SS", _SECTION_SIGN)


@pytest.mark.parametrize(
    "text",
    [
        "driven from the event loop (K#1).",
        "or the disk spool (K#1-K#3).",
        "shutdown (C#1–C#3, SS5.3).",
        "the feed's own TaskGroup (DOC API#1, M#1, M#2).",
        "loses nothing (K#3, K#2): SIGTERM",
        "SS5.5 end to end",
        "Wire format (Kite v3, DOC SS6)",
        'the Redis snapshot (DOC O#1 "show status")',
        "The K#2 identity, and nothing left in flight.",
        "Benchmarks (DOC): ours vs the original design",
    ],
)
def test_citations_are_recognised(text: str) -> None:
    assert CITATION.search(_example(text)), _example(text)


@pytest.mark.parametrize(
    "text",
    [
        "an Apple M#1 laptop runs it",
        "token K#1ABC and api#1_key are identifiers",
        "column D#1 of the sheet",
        "spec = build_spec(settings)",
        "the specification of the wire format",
        "SPECIAL_TOKENS and INSPECT are words",
        "prices (in paise) and quantities (lots)",
        "p#99 (ms), P#50 and C#4 bytes",
    ],
)
def test_ordinary_text_is_not_a_citation(text: str) -> None:
    assert not CITATION.search(_example(text)), _example(text)


def _scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for directory in SCANNED_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if (
                path.is_file()
                and not parts & SKIPPED_DIRS
                and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
            ):
                files.append(path)
    return files


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary: recordings, images
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_the_repository_cites_no_outside_document() -> None:
    found: list[str] = []
    scanned = 0
    for path in _scanned_files():
        text = _text(path)
        if text is None:
            continue
        scanned += 1
        for number, line in enumerate(text.splitlines(), start=1):
            if match := CITATION.search(line):
                found.append(
                    f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r} in {line.strip()}"
                )
    assert scanned > 100, f"only {scanned} text files found under {ROOT}: wrong root?"
    assert not found, "citations of an outside document:\n" + "\n".join(found)
