"""The publisher's batch path: ``WireEncoder.encode_values`` gives exactly the bytes of
``encode()``, and ``RecordBuilder`` drops and counts only a tick that cannot be encoded."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from alphapanda.market_tick import MarketTick
from alphapanda.pipeline.accounting import DROP_ENCODE_ERROR, DROP_MALFORMED, Accounting
from alphapanda.pipeline.formatter import TickFormatter
from alphapanda.pipeline.publisher import RecordBuilder
from alphapanda.pipeline.wire import MarketTickEvent, WireDecoder, WireEncoder
from tests.unit.test_formatter import EQUITY, full_tick
from tests.unit.test_wire import EMITTED_NS, _ticks


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_encode_values_is_byte_identical_to_encode(fmt: str) -> None:
    batch_encoder = WireEncoder(fmt)  # type: ignore[arg-type]
    one_by_one = WireEncoder(fmt)  # type: ignore[arg-type]
    # Same ids: the random middle part and the counter.
    one_by_one._id_mid = batch_encoder._id_mid
    ticks = _ticks()
    for emitted in (EMITTED_NS, EMITTED_NS, EMITTED_NS + 1_234_567_891, EMITTED_NS + 10**12):
        values = batch_encoder.encode_values(ticks, emitted)
        expected = [one_by_one.encode(tick, emitted)[1] for tick in ticks]
        assert values == expected
    assert batch_encoder.shared_headers == one_by_one.headers()


def test_encode_values_counter_wraps_like_encode() -> None:
    encoder = WireEncoder()
    reference = WireEncoder()
    reference._id_mid = encoder._id_mid
    encoder._seq = reference._seq = 0xFFFF_FFFF_FFFE
    tick = _ticks()[0]
    values = encoder.encode_values([tick, tick, tick], EMITTED_NS)
    assert values == [reference.encode(tick, EMITTED_NS)[1] for _ in range(3)]
    ids = [msgspec.json.decode(v, type=MarketTickEvent).id[-12:] for v in values]
    assert ids == ["ffffffffffff", "000000000000", "000000000001"]


class _FailsOn(WireEncoder):
    """Raises for one instrument, as msgspec would for a value it cannot encode."""

    def encode_values(self, ticks: Sequence[MarketTick], emitted_at_ns: int) -> list[bytes]:
        if any(t.instrument_token == EQUITY + 256 for t in ticks):
            raise TypeError("cannot encode")
        return super().encode_values(ticks, emitted_at_ns)


def test_tick_encoder_drops_only_what_cannot_be_encoded() -> None:
    accounting = Accounting()
    ticks = [
        full_tick(),
        full_tick(EQUITY + 256),
        full_tick(last_price=float("nan")),  # malformed: dropped by the formatter
        full_tick(volume_traded=2),
    ]
    accounting.accept(len(ticks))
    accounting.take(len(ticks))
    encoder = RecordBuilder(TickFormatter(), _FailsOn(), accounting)
    messages = encoder.encode(ticks)
    assert [m.key for m in messages] == [str(EQUITY).encode()] * 2
    decoded = [WireDecoder().decode(m.value) for m in messages]
    assert [e.data.volume_traded for e in decoded] == [ticks[0].volume_traded, 2]
    assert [m.received_at_ns for m in messages] == [ticks[0].received_at_ns] * 2
    # Both come from one frame: their packet indexes (the ``pkt`` header) are 0 and 1.
    assert [m.headers for m in messages] == [
        [*encoder.wire.headers(), ("pkt", b"0")],
        [*encoder.wire.headers(), ("pkt", b"1")],
    ]
    assert accounting.dropped == {DROP_ENCODE_ERROR: 1, DROP_MALFORMED: 1}
    assert accounting.encoding == 2
