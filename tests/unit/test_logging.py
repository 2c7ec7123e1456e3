"""Logging: JSON/text output, secret redaction everywhere in a record, rate limiting."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from alphapanda.logs import (
    Redactor,
    configure_logging,
    flush_suppressed,
    get_logger,
    secrets_of,
)
from alphapanda.settings import LogSettings, Settings

ACCESS_TOKEN = "kT0ken-AbC123xyz"
API_SECRET = "s3cr3t-api-VALUE"
REDIS_PASSWORD = "r3dis-pa55"
DB_PASSWORD = "pg-Pa55word!"
API_KEY = "control-api-key-999"
ALL_SECRETS = (ACCESS_TOKEN, API_SECRET, REDIS_PASSWORD, DB_PASSWORD, API_KEY)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings() -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        kite={"access_token": ACCESS_TOKEN, "api_secret": API_SECRET},  # type: ignore[arg-type]
        redis={"url": f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"},  # type: ignore[arg-type]
        database={"url": f"postgresql+asyncpg://feed:{DB_PASSWORD}@db.internal/feed"},  # type: ignore[arg-type]
        api={"api_key": API_KEY},  # type: ignore[arg-type]
    )


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def configured(
    settings: Settings, *, json_output: bool, clock: Clock | None = None, burst: int = 3
) -> tuple[io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = configure_logging(
        LogSettings(level="INFO", json_output=json_output),
        secrets=secrets_of(settings),
        stream=stream,
        window=10.0,
        burst=burst,
        clock=clock or Clock(),
    )
    return stream, handler


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.usefixtures("restore_root")
def test_json_output_carries_ids_as_fields(settings: Settings) -> None:
    stream, _ = configured(settings, json_output=True)
    log = get_logger("alphapanda.test.json")
    log.warning("malformed field %s", "oi", extra={"instrument_token": 256265, "shard": 1})
    log.debug("per-tick detail is below the configured level")
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["level"] == "WARNING"
    assert record["logger"] == "alphapanda.test.json"
    assert record["msg"] == "malformed field oi"
    assert record["instrument_token"] == 256265
    assert record["shard"] == 1
    assert record["ts"].endswith("Z")


@pytest.mark.usefixtures("restore_root")
def test_text_output_and_reconfiguring_replaces_the_handler(settings: Settings) -> None:
    configured(settings, json_output=True)
    stream, _ = configured(settings, json_output=False)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_alphapanda_handler", False)]
    assert len(ours) == 1
    get_logger("alphapanda.test.text").info("connected", extra={"shard": 2})
    (line,) = lines(stream)
    assert " INFO alphapanda.test.text: connected shard=2" in line


def test_secrets_of_takes_passwords_out_of_urls(settings: Settings) -> None:
    found = set(secrets_of(settings))
    assert found == set(ALL_SECRETS)


def test_redactor_scrubs_secret_shaped_patterns_without_knowing_the_values() -> None:
    redact = Redactor().redact
    out = redact(
        "GET wss://ws.kite.trade?api_key=kitekey&access_token=zzTOKENzz failed; "
        'body {"api_secret": "qqSECRETqq", "password":"ppPASSpp"} '
        "dsn=postgresql://user:hunter2@db:5432/x Authorization: token kitekey:aaTOKaa "
        "request_token=rrREQrr instrument_token=256265"
    )
    for leaked in ("zzTOKENzz", "qqSECRETqq", "ppPASSpp", "hunter2", "aaTOKaa", "rrREQrr"):
        assert leaked not in out
    # Ids and non-secret context survive.
    assert "instrument_token=256265" in out
    assert "api_key=kitekey" in out
    assert "postgresql://user:***@db:5432/x" in out


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("json_output", [True, False])
def test_no_secret_reaches_the_output_from_any_part_of_a_record(
    settings: Settings, json_output: bool
) -> None:
    stream, _ = configured(settings, json_output=json_output)
    log = get_logger("alphapanda.test.redact")
    url = f"wss://ws.kite.trade?api_key=k&access_token={ACCESS_TOKEN}"
    log.error("handshake to %s failed", url, extra={"shard": 0})
    log.warning("api secret is %s, key %s", API_SECRET, API_KEY)
    log.info("redis at %s", settings.redis.url.get_secret_value())
    log.info("db at %s", settings.database.url.get_secret_value())
    log.info("encoded in a query: %s", "dsn?pw=pg-Pa55word%21")
    log.warning("extra field", extra={"url": url})
    try:
        raise ConnectionError(f"cannot open {url} with secret {API_SECRET}")
    except ConnectionError:
        log.exception("connect failed", extra={"shard": 1})
    out = stream.getvalue()
    assert out.count("\n") >= 7
    for secret in ALL_SECRETS:
        assert secret not in out, secret
    assert "pg-Pa55word%21" not in out
    assert "ConnectionError" in out  # the exception itself is still reported
    assert "cache.internal:6379" in out  # and where it was going


@pytest.mark.usefixtures("restore_root")
def test_secrets_are_scrubbed_for_every_handler_after_ours(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    configured(settings, json_output=False)
    get_logger("alphapanda.test.caplog").warning("token %s", ACCESS_TOKEN)
    assert ACCESS_TOKEN not in caplog.text
    assert caplog.records[0].getMessage() == "token ***"


@pytest.mark.usefixtures("restore_root")
def test_repeats_of_one_template_are_suppressed_counted_and_summarised(
    settings: Settings,
) -> None:
    clock = Clock()
    stream, _ = configured(settings, json_output=True, clock=clock, burst=3)
    log = get_logger("alphapanda.test.rate")
    for shard in range(10):
        log.warning("shard %s: reconnect failed", shard)
    log.warning("a different message")
    shown = [json.loads(line)["msg"] for line in lines(stream)]
    assert shown == [
        "shard 0: reconnect failed",
        "shard 1: reconnect failed",
        "shard 2: reconnect failed",
        "a different message",
    ]

    clock.now += 10.5  # the window has passed: the next record brings the summary
    log.warning("shard %s: reconnect failed", 7)
    tail = [json.loads(line) for line in lines(stream)[4:]]
    assert tail[0]["msg"] == "suppressed 7 similar messages in 10s: shard %s: reconnect failed"
    assert tail[0]["suppressed"] == 7
    assert tail[0]["level"] == "WARNING"
    assert tail[1]["msg"] == "shard 7: reconnect failed"


@pytest.mark.usefixtures("restore_root")
def test_pending_suppressions_are_reported_on_flush(settings: Settings) -> None:
    stream, handler = configured(settings, json_output=False, burst=1)
    log = get_logger("alphapanda.test.flush")
    for _ in range(4):
        log.error("broker unreachable")
    flush_suppressed(handler)
    out = lines(stream)
    assert len(out) == 2
    assert "suppressed 3 similar messages in 10s: broker unreachable" in out[1]


@pytest.mark.usefixtures("restore_root")
def test_long_messages_are_truncated(settings: Settings) -> None:
    stream, _ = configured(settings, json_output=True)
    get_logger("alphapanda.test.long").warning("payload %s", "x" * 10_000)
    msg = json.loads(lines(stream)[0])["msg"]
    assert len(msg) < 2100
    assert msg.endswith("chars truncated]")


def test_log_throttle_allows_one_line_per_key_and_interval_and_counts_the_rest() -> None:
    from alphapanda.logs import LogThrottle

    throttle = LogThrottle(interval=10.0, max_keys=2)
    assert throttle.allow("a", 0.0) == (True, 0)
    assert throttle.allow("a", 1.0) == (False, 0)
    assert throttle.allow("a", 2.0) == (False, 0)
    assert throttle.allow("a", 10.0) == (True, 2)  # "(and 2 more like it)"
    # Bounded: a third key forgets the oldest one.
    assert throttle.allow("b", 11.0) == (True, 0)
    assert throttle.allow("c", 12.0) == (True, 0)
    assert throttle.allow("a", 12.5) == (True, 0)  # "a" was forgotten
