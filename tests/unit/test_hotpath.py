"""Choosing the hot path: native when the extension imports, Python otherwise (one
WARNING and ``hot_path{impl="python"}``), and a clear error when native is demanded."""

from __future__ import annotations

import logging
import os
import sys
import types

import pytest

import alphapanda
from alphapanda.pipeline.hotpath import NativeUnavailable, load_native, select_hot_path

pytestmark = pytest.mark.unit


@pytest.fixture
def no_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension cannot be imported (as on a machine where it was never built)."""
    monkeypatch.setitem(sys.modules, "alphapanda._native", None)
    monkeypatch.delattr(alphapanda, "_native", raising=False)


def _impl_label(path: object) -> list[tuple[str, float, tuple[tuple[str, str], ...]]]:
    return [(s.name, s.value, s.labels) for s in path.samples()]  # type: ignore[attr-defined]


def test_python_setting_never_touches_the_extension(no_extension: None) -> None:
    path = select_hot_path("python")
    assert path.impl == "python"
    assert _impl_label(path) == [("hot_path", 1, (("impl", "python"),))]


@pytest.mark.skipif(load_native()[0] is None, reason="extension not built")
def test_auto_picks_the_extension_when_it_imports() -> None:
    path = select_hot_path("auto")
    assert path.impl == "native"
    assert _impl_label(path) == [("hot_path", 1, (("impl", "native"),))]


def test_auto_falls_back_to_python_with_one_warning(
    no_extension: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="alphapanda.pipeline.hotpath"):
        path = select_hot_path("auto")
    assert path.impl == "python"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Python path" in warnings[0].getMessage()
    assert _impl_label(path) == [("hot_path", 1, (("impl", "python"),))]
    # The fallback decodes like the reference decoder.
    decoded = path.decode(b"\x00", 1)
    assert decoded.heartbeat and not decoded.ticks


def test_native_setting_without_the_extension_fails_clearly(no_extension: None) -> None:
    with pytest.raises(NativeUnavailable, match="make venv"):
        select_hot_path("native")


def test_a_stale_build_of_the_extension_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An editable install not rebuilt after a pull: the module imports, but offers an
    # older interface (here, none at all), so it must not be half used.
    stale = types.ModuleType("alphapanda._native")
    monkeypatch.setitem(sys.modules, "alphapanda._native", stale)
    monkeypatch.setattr(alphapanda, "_native", stale, raising=False)
    native, why = load_native()
    assert native is None and "stale" in why and "make venv" in why
    with caplog.at_level(logging.WARNING, logger="alphapanda.pipeline.hotpath"):
        assert select_hot_path("auto").impl == "python"
    with pytest.raises(NativeUnavailable, match="stale"):
        select_hot_path("native")


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI promises a fresh build")
def test_ci_runs_the_native_extension() -> None:
    # The native tests skip without the extension; in CI it is always built, so a skip
    # there would hide a broken build.
    native, why = load_native()
    assert native is not None, why
