"""``ALPHAPANDA_KITE__ENV`` picks Kite's endpoints; doctor flags a key/endpoint mismatch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alphapanda.ops.doctor import CheckWarning, check_endpoints
from alphapanda.settings import load_settings

NO_ENV_FILE = Path("/nonexistent")


def test_default_is_the_simulator_on_loopback() -> None:
    kite = load_settings(env_file=NO_ENV_FILE).kite
    assert kite.env == "sim"
    assert kite.ws_url == "ws://127.0.0.1:18765"
    assert kite.api_root == "http://127.0.0.1:18766"
    assert kite.login_url.startswith("http://127.0.0.1:18766/")


def test_live_picks_the_real_kite_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__ENV", "live")
    kite = load_settings(env_file=NO_ENV_FILE).kite
    assert kite.ws_url == "wss://ws.kite.trade"
    assert kite.api_root == "https://api.kite.trade"
    assert kite.login_url == "https://kite.zerodha.com/connect/login"


def test_an_explicit_url_overrides_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__ENV", "live")
    monkeypatch.setenv("ALPHAPANDA_KITE__WS_URL", "wss://proxy.example:8443")
    kite = load_settings(env_file=NO_ENV_FILE).kite
    assert kite.ws_url == "wss://proxy.example:8443"
    assert kite.api_root == "https://api.kite.trade"


def test_an_unknown_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__ENV", "prod")
    with pytest.raises(Exception, match="ALPHAPANDA_KITE__ENV"):
        load_settings(env_file=NO_ENV_FILE)


def test_doctor_warns_on_a_real_key_with_loopback_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__API_KEY", "abcd1234efgh5678")
    with pytest.raises(CheckWarning, match="ALPHAPANDA_KITE__ENV=live"):
        asyncio.run(check_endpoints(load_settings(env_file=NO_ENV_FILE)))
    monkeypatch.setenv("ALPHAPANDA_KITE__ENV", "live")
    detail = asyncio.run(check_endpoints(load_settings(env_file=NO_ENV_FILE)))
    assert "wss://ws.kite.trade" in detail


def test_doctor_warns_on_live_with_the_simulators_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__ENV", "live")
    with pytest.raises(CheckWarning, match="ALPHAPANDA_KITE__API_KEY"):
        asyncio.run(check_endpoints(load_settings(env_file=NO_ENV_FILE)))


def test_the_simulators_key_on_loopback_is_fine() -> None:
    assert "env sim" in asyncio.run(check_endpoints(load_settings(env_file=NO_ENV_FILE)))
