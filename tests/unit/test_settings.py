from __future__ import annotations

from pathlib import Path

import pytest

from alphapanda.settings import SettingsError, effective_settings, load_settings, redact_url
from alphapanda.topics import TopicNames, validate_topic_name


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings(env_file=Path("/nonexistent"))
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.redis.url.get_secret_value() == "redis://127.0.0.1:16379/0"
    assert ":15432/" in settings.database.url.get_secret_value()
    assert settings.kite.max_connections == 3


def test_environment_overrides_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("ALPHAPANDA_FEED__MODE", "ltp")
    monkeypatch.setenv("ALPHAPANDA_API__PORT", "9999")
    settings = load_settings(env_file=Path("/nonexistent"))
    assert settings.kafka.bootstrap_servers == "10.0.0.1:9092,10.0.0.2:9092"
    assert settings.feed.mode == "ltp"
    assert settings.api.port == 9999


def test_settings_are_frozen() -> None:
    settings = load_settings(env_file=Path("/nonexistent"))
    with pytest.raises(Exception, match="frozen"):
        settings.kafka.linger_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS", "localhost", "host:port"),
        ("ALPHAPANDA_FEED__MODE", "fast", "'ltp', 'quote' or 'full'"),
        ("ALPHAPANDA_API__PORT", "70000", "less than or equal to 65535"),
        ("ALPHAPANDA_KITE__WS_URL", "http://x", "ws://"),
        ("ALPHAPANDA_KAFKA__TOPIC_PREFIX", "bad prefix!", "invalid topic name"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=Path("/nonexistent"))
    message = str(info.value)
    assert variable in message
    assert reason in message


def test_rejected_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_REDIS__URL", "http://user:hunter2-secret@host")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=Path("/nonexistent"))
    assert "ALPHAPANDA_REDIS__URL" in str(info.value)
    assert "hunter2-secret" not in str(info.value)


def test_env_file_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ALPHAPANDA_KITE__API_KEY=from-dotenv\n")
    toml = tmp_path / "alphapanda.toml"
    toml.write_text('[kafka]\nlinger_ms = 7\n[kite]\napi_key = "from-toml"\n')
    monkeypatch.setenv("ALPHAPANDA_CONFIG_FILE", str(toml))
    settings = load_settings(env_file=env_file)
    assert settings.kite.api_key == "from-dotenv"  # .env wins over the file
    assert settings.kafka.linger_ms == 7


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_CONFIG_FILE", "/nowhere/alphapanda.toml")
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(env_file=Path("/nonexistent"))


def test_secrets_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPANDA_KITE__ACCESS_TOKEN", "tok-very-secret")
    monkeypatch.setenv("ALPHAPANDA_DATABASE__URL", "postgresql+asyncpg://u:pw-secret@h:5432/d")
    settings = load_settings(env_file=Path("/nonexistent"))
    shown = repr(settings) + str(effective_settings(settings))
    assert "tok-very-secret" not in shown
    assert "pw-secret" not in shown
    assert effective_settings(settings)["database"]["url"] == "postgresql+asyncpg://u:***@h:5432/d"


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


def test_topic_names_share_one_validator() -> None:
    assert TopicNames.MARKET_TICKS == "market.ticks"
    assert TopicNames.market_ticks("paper.") == "paper.market.ticks"
    for bad in ("", ".", "..", "a b", "x" * 250):
        with pytest.raises(ValueError, match="invalid topic name"):
            validate_topic_name(bad)
