"""The hot path: Kite frames to Kafka records, in the Rust extension or in Python.

Two implementations of one contract, equal byte for byte (the differential tests hold
them together):

*native*
    ``alphapanda._native`` (Rust, built by maturin from ``native/``).
    ``decode_frame`` turns a frame into ``NativeTick``s, each the packet's bytes and
    the frame's receive time, which the ``TickBuffer`` carries like decoded ticks
    (conflation reads their ``instrument_token``; ``last_price``, ``volume_traded``,
    ``oi``, ``exchange_timestamp``, ``mode`` and ``received_at_ns`` are there too). The
    ``RecordBuilder`` hands a batch of them to ``encode_ticks``: format, envelope, key and
    value for the whole batch in one call, no Python object per field.
*python*
    ``decode_message`` → ``Tick``, ``TickFormatter.format`` → ``MarketTick``,
    ``WireEncoder.encode_values``: the reference, and the fallback when the extension
    cannot be imported (one WARNING, metric ``hot_path{impl="python"}``).

``FrameRecordBuilder`` puts either behind one call per frame (frame bytes in, records out),
for the benchmarks and the differential tests.

The derived streams (candles, latest quotes) get each batch with its records. On the
native path the batch is ``NativeTick``s: candles read ``NativeTick.candle_fields`` (the
values the record carries); latest quotes keep the records as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, TypeAlias, cast

from alphapanda.kite.protocol import DecodedMessage, SkippedPacket, Tick, decode_message
from alphapanda.market_tick import MarketTick
from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample
from alphapanda.pipeline.formatter import TickFormatter, format_all
from alphapanda.pipeline.producer import EncodedMessage
from alphapanda.pipeline.wire import WireEncoder

if TYPE_CHECKING:
    from alphapanda._native import NativeTick

log = logging.getLogger(__name__)

# The extension's interface this code needs (its API_VERSION): an editable install run
# without rebuilding after a pull has an older one, and falls back to the Python path.
NATIVE_API_VERSION: Final = 4

HotPathSetting = Literal["auto", "native", "python"]
HotPathImpl = Literal["native", "python"]
#: What the derived streams are handed per encoded batch (with its records): formatted
#: ticks (Python path) or the batch's ``NativeTick``s (native path).
TickBatch: TypeAlias = "list[MarketTick] | list[NativeTick]"


class NativeUnavailable(RuntimeError):
    """``hot_path = "native"`` was asked for but the extension cannot be imported."""


def load_native() -> tuple[ModuleType | None, str]:
    """The extension module, or ``None`` and why it cannot be used."""
    try:
        from alphapanda import _native
    except ImportError as exc:
        return None, str(exc)
    built = getattr(_native, "API_VERSION", None)
    if built != NATIVE_API_VERSION:
        return None, (
            f"the built extension is stale (interface {built}, this code needs "
            f"{NATIVE_API_VERSION}): rebuild it with `make venv` or `pip install -e .`"
        )
    return _native, ""


class HotPath:
    """Which implementation the feed runs; decodes frames for the socket readers."""

    def __init__(self, native: ModuleType | None) -> None:
        self._native = native
        self.impl: HotPathImpl = "python" if native is None else "native"

    @property
    def native(self) -> ModuleType | None:
        """The extension module on the native path (its WAL writer too), else None."""
        return self._native

    def decode(self, frame: bytes, received_at_ns: int) -> DecodedMessage:
        """The frame's ticks (``NativeTick``s on the native path), heartbeat and skips."""
        if self._native is None:
            return decode_message(frame, received_at_ns)
        ticks, heartbeat, skipped = self._native.decode_frame(frame, received_at_ns)
        # NativeTick stands in for Tick wherever ticks are only carried (the buffer,
        # conflation by instrument_token); RecordBuilder tells the two apart.
        return DecodedMessage(
            cast("list[Tick]", ticks), heartbeat, [SkippedPacket(*s) for s in skipped]
        )

    def samples(self) -> Iterator[Sample]:
        yield catalog.HOT_PATH.sample(1, (("impl", self.impl),))


def select_hot_path(setting: HotPathSetting) -> HotPath:
    """The hot path the feed runs on, per ``feed.hot_path``."""
    if setting == "python":
        return HotPath(None)
    native, error = load_native()
    if native is None:
        if setting == "native":
            raise NativeUnavailable(
                f"feed.hot_path is 'native' but the extension cannot be imported ({error}); "
                "rebuild it with `make venv` (needs cargo) or set ALPHAPANDA_FEED__HOT_PATH=auto"
            )
        log.warning(
            "native hot path unavailable (%s): running on the Python path; "
            "rebuild it with `make venv` (needs cargo)",
            error,
        )
    return HotPath(native)


def is_native_batch(ticks: Sequence[object]) -> bool:
    """True when ``ticks`` came from the native decoder (one decoder per feed)."""
    return bool(ticks) and type(ticks[0]) is not Tick


def encode_native_ticks(
    formatter: TickFormatter, wire: WireEncoder, ticks: Sequence[object], emitted_at_ns: int
) -> list[EncodedMessage]:
    """Records for a batch of ``NativeTick``s, counted on ``formatter`` as ``format()``
    would count them, with ids from ``wire``'s counter."""
    from alphapanda import _native

    # Each record's position in its frame (the ``pkt`` header crash recovery matches on),
    # numbered on the same encoder state as the Python path's records: by the extension,
    # or, while a crash recovery's seeded positions are pending, here.
    positions = wire.native_positions()
    records, seq, malformed = _native.encode_ticks(
        cast("list[_native.NativeTick]", ticks),
        emitted_at_ns,
        msgpack=wire.format == "msgpack",
        include_depth=formatter.include_depth,
        include_oi=formatter.include_oi,
        id_mid=wire.id_mid,
        seq=wire.seq,
        headers=wire.shared_headers,
        message_type=EncodedMessage,
        positions=positions,
        headers_at=None if positions is None else wire.headers_at,
        max_positions=wire.max_positions,
    )
    wire.seq = seq
    formatter.count_external(len(records), malformed)
    if positions is not None:
        return cast("list[EncodedMessage]", records)
    position = wire.position_headers
    return [
        record._replace(headers=position(int(record.key), record.received_at_ns))
        for record in cast("list[EncodedMessage]", records)
    ]


class FrameRecords(NamedTuple):
    """Everything one frame turned into."""

    records: list[EncodedMessage]
    heartbeat: bool
    skipped: list[SkippedPacket]


class FrameRecordBuilder:
    """One call per frame: bytes in, ready-to-produce records out (native or Python).

    Both paths count on ``formatter`` and draw ids from ``wire``, so two encoders built
    alike give identical bytes for identical calls.
    """

    def __init__(
        self, formatter: TickFormatter, wire: WireEncoder, native: ModuleType | None
    ) -> None:
        self.formatter = formatter
        self.wire = wire
        self._native = native
        self.impl: HotPathImpl = "python" if native is None else "native"

    @property
    def native(self) -> ModuleType | None:
        """The extension module on the native path (its WAL writer too), else None."""
        return self._native

    def encode(self, frame: bytes, received_at_ns: int, emitted_at_ns: int) -> FrameRecords:
        if self._native is None:
            return self._encode_python(frame, received_at_ns, emitted_at_ns)
        wire = self.wire
        formatter = self.formatter
        records, seq, malformed, heartbeat, skipped = self._native.encode_frame(
            frame,
            received_at_ns,
            emitted_at_ns,
            msgpack=wire.format == "msgpack",
            include_depth=formatter.include_depth,
            include_oi=formatter.include_oi,
            id_mid=wire.id_mid,
            seq=wire.seq,
            headers=wire.shared_headers,
            message_type=EncodedMessage,
        )
        wire.seq = seq
        formatter.count_external(len(records), malformed)
        return FrameRecords(records, heartbeat, [SkippedPacket(*s) for s in skipped])

    def _encode_python(self, frame: bytes, received_at_ns: int, emitted_at_ns: int) -> FrameRecords:
        # Today's pieces, composed as the feed composes them (the reference).
        decoded = decode_message(frame, received_at_ns)
        formatted = format_all(self.formatter, decoded.ticks)
        wire = self.wire
        values = wire.encode_values(formatted, emitted_at_ns)
        headers = wire.shared_headers
        records = [
            EncodedMessage(wire.key(mt.instrument_token), value, headers, mt.received_at_ns)
            for mt, value in zip(formatted, values, strict=True)
        ]
        return FrameRecords(records, decoded.heartbeat, decoded.skipped)
