"""Logging for the service: structured, rate-limited, and scrubbed of secrets.

``configure_logging(settings.log, secrets=secrets_of(settings))`` installs ONE handler on
the root logger (stdlib ``logging``; every library's records pass through it) with two
filters, in this order:

1. ``RateLimitFilter`` — the same logger + level + message *template* more than
   ``burst`` times within ``window`` seconds is suppressed and counted; a line
   ``suppressed N similar messages …`` follows once the window has passed (or at
   ``flush_suppressed()``). Keyed on the template, not the formatted text, so a storm of
   "shard %s reconnect failed" collapses whatever the arguments.
2. ``RedactingFilter`` — formats the message, then scrubs every configured secret
   (access token, API secret, DB/Redis passwords, API key) and anything shaped like
   ``access_token=…``, ``api_secret=…``, ``password=…``, ``Authorization: token …`` or
   ``scheme://user:pass@`` from the message, exception text, stack and extra fields.
   Long messages are truncated: error records should carry ids, not payloads.
   The same scrubbing also runs in a log-record factory, at record creation, so that
   handlers installed by others (uvicorn's, pytest's) never see a secret either.

Output is one line per record, JSON when ``settings.log.json_output`` (fields ``ts``,
``level``, ``logger``, ``msg``, any ``extra=`` fields such as ``shard`` or
``instrument_token``, and ``exc``), otherwise ``ts LEVEL logger: msg key=value …``.

The module is called ``logs`` so that it can never shadow the standard ``logging``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote, urlsplit

import msgspec
from pydantic import BaseModel, SecretStr

from alphapanda.settings import LogSettings, Settings

MASK = "***"
_HANDLER_MARK = "_alphapanda_handler"
_SUMMARY_MARK = "_alphapanda_summary"
_TEMPLATE = "_alphapanda_template"
# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
# uvicorn adds `color_message` (the message with ANSI colours) to its records: not an id.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# Libraries whose chatty levels would log frames, request URLs (with tokens) or payloads.
_QUIET_LOGGERS = ("websockets", "httpx", "httpcore", "urllib3", "kiteconnect", "aiokafka")

_KEY_VALUE = re.compile(
    r"(?i)(?P<key>\b(?:access_token|request_token|refresh_token|api_secret|secret|password|"
    r"passwd|pwd|x-api-key|api-key-secret)\b[\"']?\s*[=:]\s*[\"']?)"
    r"(?P<value>[^\s&\"',;}\]]+)"
)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+(?P<at>@)")
_AUTH_HEADER = re.compile(
    r"(?i)(?P<key>\bauthorization\b[\"']?\s*[=:]\s*[\"']?(?:token|bearer|basic)?\s*)"
    r"(?P<value>[^\s\"',;]+)"
)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings, plus the passwords inside secret URLs."""
    found: list[str] = []
    for group_name in type(settings).model_fields:
        group = getattr(settings, group_name)
        if not isinstance(group, BaseModel):
            continue
        for field_name in type(group).model_fields:
            value = getattr(group, field_name)
            if not isinstance(value, SecretStr):
                continue
            secret = value.get_secret_value()
            if not secret:
                continue
            if "://" in secret:
                password = urlsplit(secret).password
                if password:
                    found.append(password)
                # The URL itself is redacted by the userinfo pattern; a password-less URL
                # is not secret (it names a host), so it is not added as a literal.
            else:
                found.append(secret)
    return found


class Redactor:
    """Scrubs known secret values and secret-shaped patterns from text."""

    def __init__(self, secrets: Iterable[str] = (), *, min_length: int = 4) -> None:
        literals: set[str] = set()
        for secret in secrets:
            # Shorter strings would mask innocent words; such a "secret" is no secret.
            if len(secret) >= min_length:
                literals.add(secret)
                literals.add(quote(secret, safe=""))  # as it appears inside a URL
        ordered = sorted(literals, key=len, reverse=True)  # longest first: no partial masks
        self._literals = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        if self._literals is not None:
            text = self._literals.sub(MASK, text)
        text = _URL_USERINFO.sub(rf"\g<head>{MASK}\g<at>", text)
        text = _AUTH_HEADER.sub(rf"\g<key>{MASK}", text)
        return _KEY_VALUE.sub(rf"\g<key>{MASK}", text)


class RedactingFilter(logging.Filter):
    """Formats each record once, scrubs it, and freezes the result into the record.

    Scrubbing is idempotent, so the same record may pass the record factory (see
    ``configure_logging``) and this filter without harm; the filter also covers the
    ``extra=`` fields, which are attached after the factory runs.
    """

    def __init__(self, redactor: Redactor, *, max_message_chars: int = 2000) -> None:
        super().__init__()
        self._redactor = redactor
        self._max = max_message_chars
        self._exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        self.scrub(record, extras=True)
        return True

    def scrub(self, record: logging.LogRecord, *, extras: bool) -> None:
        if not hasattr(record, _TEMPLATE):
            setattr(record, _TEMPLATE, record.msg)
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} (unformattable args {len(record.args or ())})"
        message = self._redactor.redact(message)
        if len(message) > self._max:
            message = f"{message[: self._max]}… [{len(message) - self._max} chars truncated]"
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redactor.redact(record.stack_info)
        if extras:
            for name, value in list(record.__dict__.items()):
                if name not in _STANDARD_ATTRS and isinstance(value, str):
                    setattr(record, name, self._redactor.redact(value))


class _RedactingRecordFactory:
    """Scrubs every record at creation, so handlers installed by anyone else (uvicorn's,
    pytest's) never see a secret either. Keeps the original template for rate limiting."""

    def __init__(self, base: Callable[..., logging.LogRecord], scrubber: RedactingFilter) -> None:
        self.base = base
        self._scrubber = scrubber

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        self._scrubber.scrub(record, extras=False)
        return record


class LogThrottle:
    """Allows one log line per key per ``interval`` seconds and counts the rest.

    Pure: the caller passes the (monotonic) time. ``allow`` returns how many lines of
    that key were suppressed since the last one allowed, so the next line can say
    "(and 41 more like it)" instead of silently losing them.
    """

    def __init__(self, interval: float = 10.0, max_keys: int = 256) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """``(True, suppressed_before)`` if a line for ``key`` may be logged now."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        if last is None and len(self._last) >= self.max_keys:
            # Bounded: forget the oldest key rather than grow with hostile input.
            oldest = min(self._last, key=self._last.__getitem__)
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last[key] = now
        return True, self._suppressed.pop(key, 0)


@dataclass
class _Window:
    started: float
    passed: int
    suppressed: int
    level: int
    template: str


class RateLimitFilter(logging.Filter):
    """Lets ``burst`` records per (logger, level, template) through per ``window`` seconds.

    Suppressed records are counted (``suppressed_total``) and reported in one summary
    line per key when its window has passed and the next record of any kind arrives, or
    when ``flush_suppressed()`` is called (at shutdown).
    """

    def __init__(
        self,
        window: float = 10.0,
        burst: int = 3,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        super().__init__()
        self._window = window
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[tuple[str, int, str], _Window] = {}
        # Records may come from librdkafka/uvicorn threads too.
        self._lock = threading.Lock()
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY_MARK, False):
            return True
        now = self._clock()
        # The unformatted template (saved before redaction formatted the message).
        template = getattr(record, _TEMPLATE, record.msg)
        if not isinstance(template, str):
            template = type(template).__name__
        key = (record.name, record.levelno, template)
        with self._lock:
            due = self._take_expired(now)
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self._max_keys:
                    # Bounded memory: forget the oldest key (its summary goes out now).
                    oldest = min(self._windows, key=lambda k: self._windows[k].started)
                    due.append((oldest, self._windows.pop(oldest)))
                self._windows[key] = _Window(now, 1, 0, record.levelno, template)
                allowed = True
            elif window.passed < self._burst:
                window.passed += 1
                allowed = True
            else:
                window.suppressed += 1
                self.suppressed_total += 1
                allowed = False
        _emit_summaries(due, self._window)
        return allowed

    def flush_suppressed(self) -> None:
        """Emit the summary of every key with suppressed records now."""
        with self._lock:
            due = [(key, w) for key, w in self._windows.items() if w.suppressed]
            self._windows.clear()
        _emit_summaries(due, self._window)

    def _take_expired(self, now: float) -> list[tuple[tuple[str, int, str], _Window]]:
        expired = [key for key, w in self._windows.items() if now - w.started >= self._window]
        return [(key, self._windows.pop(key)) for key in expired if key in self._windows]


def _emit_summaries(due: Iterable[tuple[tuple[str, int, str], _Window]], window: float) -> None:
    # Emitted outside the filter's lock: the summary passes through the handlers again.
    for (logger_name, _level, _template), w in due:
        if not w.suppressed:
            continue
        logging.getLogger(logger_name).log(
            w.level,
            "suppressed %d similar messages in %.0fs: %s",
            w.suppressed,
            window,
            w.template,
            extra={_SUMMARY_MARK: True, "suppressed": w.suppressed},
        )


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _STANDARD_ATTRS and not name.startswith("_")
    }


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-JSON extra values are rendered with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return msgspec.json.encode(document, enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO alphapanda.x: message shard=0``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def configure_logging(
    log: LogSettings,
    *,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
    window: float = 10.0,
    burst: int = 3,
    clock: Callable[[], float] = time.monotonic,
) -> logging.Handler:
    """Install the service's handler on the root logger (replacing a previous one) and
    a record factory that scrubs secrets from every record, whichever handler gets it.

    Returns the handler; ``flush_suppressed(handler)`` emits pending summaries.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    redacting = RedactingFilter(Redactor(secrets))
    handler.addFilter(RateLimitFilter(window, burst, clock=clock))
    handler.addFilter(redacting)
    factory = logging.getLogRecordFactory()
    if isinstance(factory, _RedactingRecordFactory):
        factory = factory.base  # reconfiguring: wrap the original, not our old wrapper
    logging.setLogRecordFactory(_RedactingRecordFactory(factory, redacting))
    handler.setFormatter(JsonFormatter() if log.json_output else TextFormatter())
    root.addHandler(handler)
    root.setLevel(log.level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler


def flush_suppressed(handler: logging.Handler) -> None:
    """Emit the "suppressed N similar messages" lines still pending on ``handler``."""
    for log_filter in handler.filters:
        if isinstance(log_filter, RateLimitFilter):
            log_filter.flush_suppressed()


def get_logger(name: str) -> logging.Logger:
    """A stdlib logger; pass ids (``extra={"shard": 0, "instrument_token": t}``), never
    payloads, and never log per tick above DEBUG."""
    return logging.getLogger(name)
