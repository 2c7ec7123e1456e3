"""Replaying a recording through the live decoder and pipeline.

``ReplaySource`` is a frame source that stands in for the WebSocket: it reads the
recording, paces it (``speed`` × the recorded pace, or as fast as the sink takes it),
decodes each frame with the same ``decode_message`` the ticker client uses, with the
recorded receive time, and hands the ticks to a ``TickSink``. Two sinks:

* the feed's own ``TickBuffer``: ``replay_to_kafka()`` runs a ``MarketFeedService``
  with no live instruments (its ticker client opens no socket) and the source
  attached as a background service, so formatter → wire encoder → ``MessageProducer``
  → Kafka, the spool and the accounting identity are exactly the live ones;
* ``JsonLinesSink``: the same formatter and wire encoder, one JSON event per line.

Because the receive time comes from the recording, the ``data`` of every event equals
what the live feed published for those frames; only ``id`` and ``emitted_at`` differ.
Every record written to Kafka by a replay carries the header ``replayed`` (the original
receive time, ns since the epoch, ASCII), so a consumer can tell it from a live tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

from alphapanda.kite.ports import TickSink
from alphapanda.kite.protocol import Tick, decode_message
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.wire import WireEncoder
from alphapanda.recording import FrameRecord, RecordingReader
from alphapanda.settings import Settings

if TYPE_CHECKING:
    from alphapanda.parts import FeedLifecycle, FeedParts
    from alphapanda.pipeline.publisher import RecordBuilder
    from alphapanda.service import MarketFeedService

log = logging.getLogger(__name__)

# Records read from disk per worker-thread hop: big enough to amortise the hop,
# small enough to keep memory flat whatever the recording's size.
_READ_BATCH: Final = 512
# How long replay_to_kafka waits for the topic before feeding anyway (ticks then
# wait in librdkafka's queue or the spool, as in the live feed).
TOPIC_WAIT: Final = 30.0
# Header on every record a replay writes; its value is the tick's original receive time.
REPLAYED_HEADER: Final = "replayed"


class ReplayStats:
    """What the replay read and decoded (plain ints)."""

    __slots__ = ("frames", "heartbeats", "skipped", "ticks")

    def __init__(self) -> None:
        self.frames = 0
        self.heartbeats = 0
        self.ticks = 0
        self.skipped: dict[str, int] = {}

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "heartbeats": self.heartbeats,
            "ticks": self.ticks,
            "skipped": dict(self.skipped),
        }


class ReplaySource:
    """Feeds a recording's frames, decoded, into ``sink``; see the module doc.

    ``speed=None`` replays as fast as the sink accepts (``block`` backpressure from
    the TickBuffer paces it); ``speed=2.0`` at twice the recorded pace. Implements the
    ``BackgroundService`` protocol (``run``/``stop``); ``on_done`` is called once the
    whole file was fed (the Kafka route uses it to begin the feed's graceful stop).
    """

    def __init__(
        self,
        path: Path,
        sink: TickSink,
        *,
        speed: float | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be > 0 (or None for as fast as possible)")
        self.reader = RecordingReader(path)
        self.total_bytes = self.reader.size_bytes
        self._sink = sink
        self._speed = speed
        self._on_done = on_done
        self._stop = asyncio.Event()
        self.stats = ReplayStats()
        self.finished = False

    @property
    def position_bytes(self) -> int:
        """How far into the file the replay is (for progress bars)."""
        return self.reader.offset

    def stop(self) -> None:
        """Stop feeding after the current frame."""
        self._stop.set()

    async def run(self) -> None:
        """Feed the whole recording (or until ``stop()``), then call ``on_done``."""
        try:
            await self._feed()
        finally:
            self.finished = True
            if self._on_done is not None:
                self._on_done()

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        records = iter(self.reader)
        stats = self.stats
        start_wall = loop.time()
        start_recorded: int | None = None
        while not self._stop.is_set():
            batch = await asyncio.to_thread(_take, records, _READ_BATCH)
            if not batch:
                break
            for record in batch:
                if self._stop.is_set():
                    return
                if self._speed is not None:
                    if start_recorded is None:
                        start_recorded = record.received_at_ns
                    due = start_wall + (record.received_at_ns - start_recorded) / 1e9 / self._speed
                    delay = due - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                decoded = decode_message(record.frame, record.received_at_ns)
                stats.frames += 1
                if decoded.heartbeat:
                    stats.heartbeats += 1
                for skipped in decoded.skipped:
                    stats.skipped[skipped.reason] = stats.skipped.get(skipped.reason, 0) + 1
                if decoded.ticks:
                    stats.ticks += len(decoded.ticks)
                    await self._sink.put_many(decoded.ticks)
        if self.reader.tail == "partial":
            log.warning(
                "%s ends in a partial record (still being written, or cut short); "
                "replayed the %d complete records before it",
                self.reader.path,
                self.reader.records,
            )

    def samples(self) -> Iterator[Sample]:
        """``MetricsSource``: frames and ticks replayed."""
        yield catalog.REPLAY_FRAMES.sample(self.stats.frames)
        yield catalog.REPLAY_TICKS.sample(self.stats.ticks)


def _take(records: Iterator[FrameRecord], n: int) -> list[FrameRecord]:
    out: list[FrameRecord] = []
    for record in records:
        out.append(record)
        if len(out) >= n:
            break
    return out


class JsonLinesSink:
    """``TickSink`` that prints each tick as its wire event, one JSON object per line."""

    def __init__(self, out: BinaryIO, formatter: TickFormatter) -> None:
        self._out = out
        self._formatter = formatter
        self._wire = WireEncoder("json")
        self.lines = 0
        self.malformed = 0

    async def put_many(self, ticks: list[Tick]) -> None:
        emitted_at_ns = time.time_ns()
        lines: list[bytes] = []
        for tick in ticks:
            market_tick = self._formatter.format(tick)
            if market_tick is None:
                self.malformed += 1  # counted per reason by the formatter as well
                continue
            lines.append(self._wire.encode(market_tick, emitted_at_ns)[1])
        if lines:
            self._out.write(b"\n".join(lines) + b"\n")
            self.lines += len(lines)


class _NoInstruments:
    """The replaying feed subscribes to nothing: the recording is its only source."""

    async def load(self) -> dict[int, str]:
        return {}


async def replay_to_stdout(
    path: Path,
    settings: Settings,
    out: BinaryIO,
    *,
    speed: float | None = None,
    started: Callable[[ReplaySource], None] | None = None,
) -> tuple[ReplaySource, JsonLinesSink]:
    """Replay ``path`` as JSON lines to ``out``; returns the source and sink (figures).
    ``started(source)`` is called before the first frame (progress bars)."""
    feed = settings.feed
    sink = JsonLinesSink(
        out, TickFormatter(include_depth=feed.include_depth, include_oi=feed.include_oi)
    )
    source = ReplaySource(path, sink, speed=speed)
    if started is not None:
        started(source)
    await source.run()
    out.flush()
    return source, sink


async def replay_to_kafka(
    path: Path,
    settings: Settings,
    *,
    speed: float | None = None,
    started: Callable[[ReplaySource, MarketFeedService], None] | None = None,
) -> tuple[ReplaySource, FeedParts]:
    """Replay ``path`` through a ``MarketFeedService`` into its topic.

    Returns ``(source, parts)`` after the feed has drained and flushed (graceful stop);
    the parts hold the figures. ``started(source, service)`` is called once both exist
    (progress bars, signal handlers).
    """
    # Imported here: the service pulls in the Kafka client, the stdout route does not.
    from alphapanda.assembly import Overrides, build
    from alphapanda.service import MarketFeedService

    parts = build(settings, Overrides(instruments=_NoInstruments()))
    service = MarketFeedService(parts)
    _mark_replayed(parts.records)
    source = ReplaySource(path, parts.buffer, speed=speed, on_done=service.request_stop)
    # The source needs the built buffer, so it joins the background services here.
    parts.services.append(_TopicGate(parts.lifecycle, source))
    if started is not None:
        started(source, service)
    await service.run()
    return source, parts


def _mark_replayed(encoder: RecordBuilder) -> None:
    """Make ``encoder`` (the one the service's publisher holds) add the ``replayed``
    header to every record. Wrapped per instance: the live feed's encoder is untouched."""
    from alphapanda.pipeline.producer import EncodedMessage

    encode = encoder.encode

    def encode_marked(ticks: Sequence[Tick]) -> list[EncodedMessage]:
        return [
            EncodedMessage(
                m.key,
                m.value,
                [*m.headers, (REPLAYED_HEADER, b"%d" % m.received_at_ns)],
                m.received_at_ns,
            )
            for m in encode(ticks)
        ]

    encoder.encode = encode_marked  # type: ignore[method-assign]


class _TopicGate:
    """Starts the source once the feed's topic exists (or after ``TOPIC_WAIT``)."""

    def __init__(self, lifecycle: FeedLifecycle, source: ReplaySource) -> None:
        self._lifecycle = lifecycle
        self._source = source

    async def run(self) -> None:
        deadline = time.monotonic() + TOPIC_WAIT
        # The topic's creation is a flag, not an event: poll it.
        while not self._lifecycle.topic_ready and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self._source.run()

    def stop(self) -> None:
        self._source.stop()
