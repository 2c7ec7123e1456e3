"""The feed's ``FeedControl`` over a few socket pairs, for the API in its own process.

The API process (``alphapanda.api.process``) parses HTTP, checks the key, limits bodies
and rate-limits callers; all it asks of the feed are ``FeedControl`` calls. Those cross
to the feed as small length-prefixed msgpack frames on ``CHANNELS`` socket pairs the
feed creates and hands to the child when it starts it:

* ``serve_channel`` (feed side) answers one request at a time per channel, on the feed's
  loop, so at most ``CHANNELS`` calls are ever in flight in the feed, whatever a client
  does. It answers only the calls of ``CALLS``, with arguments of the declared types;
  anything else is refused without touching the feed. A request frame larger than
  ``MAX_REQUEST_BYTES``, or one that is not ``[id, name, args]``, closes the channel.
* ``RemoteControl`` (API side) is the ``FeedControl`` the API's routes get. A call
  borrows a free channel and waits at most ``CALL_TIMEOUT`` for the answer; the async
  ones wait in a worker thread so the API's loop keeps serving meanwhile.

Frames: 4-byte big-endian length, then msgpack. Request ``[id, name, args]``; answer
``[id, "ok", result]``, ``[id, "unknown", tokens]``, ``[id, "capacity", requested,
capacity]``, ``[id, "rejected", message]`` or ``[id, "error", message]``. Ids let a
channel skip an answer that arrived after its caller gave up.

Latest quotes cross as the records the feed keeps (value and content type) and are
decoded in the API process, so a ``GET /quotes`` costs the feed dictionary look-ups.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import msgspec

from alphapanda.api.control import (
    FeedControl,
    OverCapacity,
    SubscriptionRejected,
    UnknownInstruments,
    unhealthy_of,
)
from alphapanda.api.isolation import CALL_TIMEOUT, FrozenSource
from alphapanda.api.models import MAX_TOKENS_PER_REQUEST
from alphapanda.api.quotes import quote_book
from alphapanda.market_tick import MarketTick
from alphapanda.metrics.reader import samples_from_rows
from alphapanda.metrics.samples import MetricsSource, gather
from alphapanda.modes import Mode
from alphapanda.streams.quotes import LatestQuotes, decode_quote

log = logging.getLogger(__name__)

# Calls in flight between the API process and the feed, at most.
CHANNELS = 4
# A request is a call name and at most a few thousand tokens.
MAX_REQUEST_BYTES = 256 * 1024
# Answers can be the feed's whole metrics set or every latest quote; still bounded.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# GET /health is not rate limited: the API process asks the feed whether it is still
# healthy at most this often.
HEALTH_TTL = 1.0

# Every frame between the two processes: a 4-byte big-endian length, then the body.
LENGTH = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_requests = msgspec.msgpack.Decoder(tuple[int, str, list[Any]])
_answers = msgspec.msgpack.Decoder(list[Any])

# Kite instrument tokens are unsigned 32-bit integers. A route may be asked about any
# integer; one outside that range has no quote and no candles, and crosses as
# NO_INSTRUMENT (or not at all).
TOKEN_RANGE = range(2**32)
NO_INSTRUMENT = -1
Token = Annotated[int, msgspec.Meta(ge=TOKEN_RANGE.start, lt=TOKEN_RANGE.stop)]
SubscriptionTokens = Annotated[list[Token], msgspec.Meta(max_length=MAX_TOKENS_PER_REQUEST)]
CandleToken = Annotated[int, msgspec.Meta(ge=NO_INSTRUMENT, lt=TOKEN_RANGE.stop)]
CandleLimit = Annotated[int, msgspec.Meta(ge=1, le=60)]


def _frame(value: Any) -> bytes:
    body = _encoder.encode(value)
    return LENGTH.pack(len(body)) + body


# --- feed side: the calls it answers ------------------------------------------------


class _Call:
    """One call the feed answers: the types its arguments must have, and the work."""

    def __init__(self, run: Callable[..., Any], *args: Any) -> None:
        self.run = run
        self.args = tuple.__class_getitem__(args)

    async def answer(self, control: FeedControl, args: list[Any]) -> Any:
        result = self.run(control, *msgspec.convert(args, self.args))
        return await result if inspect.isawaitable(result) else result


def _readiness(control: FeedControl) -> list[Any]:
    ready, reasons = control.readiness()
    return [ready, list(reasons)]


def _quote_tokens(control: FeedControl) -> list[int]:
    book = quote_book(control)
    return book.tokens() if book is not None else []


def _quote_records(control: FeedControl, tokens: list[int]) -> list[tuple[int, bytes, str]]:
    book = quote_book(control)
    return book.encoded(tokens) if isinstance(book, LatestQuotes) else []


def _recent_candles(control: FeedControl, token: int, limit: int) -> dict[str, Any] | None:
    source = getattr(control, "recent_candles", None)
    result: dict[str, Any] | None = source(token, limit) if callable(source) else None
    return result


CALLS: dict[str, _Call] = {
    "connections": _Call(lambda control: control.connections()),
    "readiness": _Call(_readiness),
    "standby_ready": _Call(lambda control: control.standby_ready()),
    "unhealthy": _Call(unhealthy_of),
    "subscriptions": _Call(lambda control: dict(control.subscriptions())),
    "add_subscriptions": _Call(
        lambda control, tokens, mode: control.add_subscriptions(tokens, mode),
        SubscriptionTokens,
        Mode,
    ),
    "remove_subscriptions": _Call(
        lambda control, tokens: control.remove_subscriptions(tokens), SubscriptionTokens
    ),
    "samples": _Call(lambda control: gather(control.metrics_sources())),
    "quote_tokens": _Call(_quote_tokens),
    # As many tokens as fit in a request (GET /quotes without tokens asks for all).
    "quote_records": _Call(_quote_records, list[Token]),
    "recent_candles": _Call(_recent_candles, CandleToken, CandleLimit),
}


async def _answer(control: FeedControl, name: str, args: list[Any]) -> list[Any]:
    call = CALLS.get(name)
    if call is None:
        return ["error", f"unknown call {name[:40]!r}"]
    try:
        return ["ok", await call.answer(control, args)]
    except msgspec.ValidationError as exc:
        return ["error", f"invalid arguments to {name}: {exc}"]
    except UnknownInstruments as exc:
        return ["unknown", exc.tokens]
    except OverCapacity as exc:
        return ["capacity", exc.requested_total, exc.capacity]
    except SubscriptionRejected as exc:
        return ["rejected", str(exc)]
    except Exception as exc:
        log.exception("control call %s failed", name)
        return ["error", f"{type(exc).__name__}: {exc}"]


async def _read_request(reader: asyncio.StreamReader) -> tuple[int, str, list[Any]] | None:
    """The next request, or None once the channel must close (the API process went
    away, or sent what it never sends)."""
    try:
        (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if length > MAX_REQUEST_BYTES:
            log.error("control request of %d bytes refused; channel closed", length)
            return None
        return _requests.decode(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.error("malformed control request; channel closed")
        return None


async def serve_channel(
    control: FeedControl, sock: socket.socket, calls: Counter[str] | None = None
) -> None:
    """Answer requests on ``sock`` until the API process closes its end; ``calls``
    counts the known calls answered, by name."""
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        while (request := await _read_request(reader)) is not None:
            call_id, name, args = request
            if calls is not None and name in CALLS:
                calls[name] += 1
            writer.write(_frame([call_id, *await _answer(control, name, args)]))
            await writer.drain()
    except ConnectionError:
        pass  # the API process went away mid-answer
    finally:
        writer.close()


# --- API side -------------------------------------------------------------------------


class _Channel:
    """One blocking end of a socket pair, with its partial-read buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._next_id = 0

    def call(self, name: str, args: list[Any], deadline: float) -> list[Any]:
        self._next_id += 1
        call_id = self._next_id
        self._settimeout(deadline)
        self.sock.sendall(_frame([call_id, name, args]))
        while True:
            answer = self._read_frame(deadline)
            if answer and answer[0] == call_id:
                return answer[1:]
            # An answer to an earlier call whose caller timed out: skip it.

    def _settimeout(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the feed did not answer in time")
        self.sock.settimeout(remaining)

    def _read_frame(self, deadline: float) -> list[Any]:
        while (frame := self._take_frame()) is None:
            self._settimeout(deadline)
            try:
                chunk = self.sock.recv(1024 * 1024)
            except TimeoutError:
                raise TimeoutError("the feed did not answer in time") from None
            if not chunk:
                raise ConnectionError("the feed closed the control channel")
            self._buffer += chunk
        return _answers.decode(frame)

    def _take_frame(self) -> bytes | None:
        if len(self._buffer) < LENGTH.size:
            return None
        (length,) = LENGTH.unpack_from(self._buffer)
        if length > MAX_ANSWER_BYTES:
            raise ConnectionError(f"control answer of {length} bytes")
        end = LENGTH.size + length
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[LENGTH.size : end])
        del self._buffer[:end]
        return frame


def _result(answer: list[Any]) -> Any:
    """The result of an answer, or the refusal it carries raised as itself."""
    kind, *rest = answer
    if kind == "ok":
        return rest[0]
    if kind == "unknown":
        raise UnknownInstruments(rest[0])
    if kind == "capacity":
        raise OverCapacity(rest[0], rest[1])
    if kind == "rejected":
        raise SubscriptionRejected(rest[0])
    raise RuntimeError(f"the feed failed a control call: {rest[0] if rest else kind}")


class RemoteControl:
    """``FeedControl`` whose calls the feed process answers. ``quotes``: the feed keeps
    latest quotes (derived streams on)."""

    def __init__(
        self, socks: Sequence[socket.socket], *, quotes: bool, timeout: float = CALL_TIMEOUT
    ) -> None:
        self._free: queue.Queue[_Channel] = queue.Queue()
        for sock in socks:
            self._free.put(_Channel(sock))
        self._timeout = timeout
        self._quotes = RemoteQuotes(self.call) if quotes else None
        self._unhealthy: str | None = None
        self._health_asked = -HEALTH_TTL

    def call(self, name: str, *args: Any) -> Any:
        """Ask the feed (blocking, at most the timeout)."""
        deadline = time.monotonic() + self._timeout
        try:
            channel = self._free.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError("every control channel is busy") from None
        try:
            answer = channel.call(name, list(args), deadline)
        finally:
            self._free.put(channel)
        return _result(answer)

    def connections(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("connections")
        return result

    def readiness(self) -> tuple[bool, list[str]]:
        ready, reasons = self.call("readiness")
        return bool(ready), [str(reason) for reason in reasons]

    def standby_ready(self) -> bool | None:
        result: bool | None = self.call("standby_ready")
        return result

    def unhealthy(self) -> str | None:
        """Why the feed must be restarted; asked at most every ``HEALTH_TTL`` seconds,
        and never again once it said (a feed does not become healthy again)."""
        now = time.monotonic()
        if self._unhealthy is None and now - self._health_asked >= HEALTH_TTL:
            self._unhealthy = self.call("unhealthy")
            self._health_asked = now
        return self._unhealthy

    def subscriptions(self) -> dict[int, str]:
        return {int(t): str(m) for t, m in self.call("subscriptions").items()}

    async def add_subscriptions(self, tokens: Sequence[int], mode: str) -> None:
        await asyncio.to_thread(self.call, "add_subscriptions", list(tokens), mode)

    async def remove_subscriptions(self, tokens: Sequence[int]) -> None:
        await asyncio.to_thread(self.call, "remove_subscriptions", list(tokens))

    def metrics_sources(self) -> list[MetricsSource]:
        return [FrozenSource(samples_from_rows(self.call("samples")))]

    def latest_quotes(self) -> RemoteQuotes | None:
        return self._quotes

    def recent_candles(self, token: int, limit: int) -> dict[str, Any] | None:
        asked = token if token in TOKEN_RANGE else NO_INSTRUMENT
        result: dict[str, Any] | None = self.call("recent_candles", asked, limit)
        return result


class RemoteQuotes:
    """The feed's latest quotes, read through ``call``; records are decoded here."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def get(self, token: int) -> MarketTick | None:
        return self.many([token]).get(token)

    def many(self, tokens: Iterable[int]) -> dict[int, MarketTick]:
        rows = self._call("quote_records", [t for t in tokens if t in TOKEN_RANGE])
        return {
            int(token): decode_quote(value, content_type) for token, value, content_type in rows
        }

    def tokens(self) -> list[int]:
        return [int(token) for token in self._call("quote_tokens")]
