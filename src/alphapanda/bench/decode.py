"""Decode benchmark: our decoder vs the official ``kiteconnect`` parser.

Both decode the *same* frames in the *same* process, interleaved repeat by repeat, so a
noisy shared machine slows both alike and the ratio stays meaningful. The frames are
realistic full-mode messages (about 50 packets each, as Kite batches them) built
deterministically from a seed: random-walk prices on each segment's tick size, five
levels of depth around the last price, OI for derivatives.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from alphapanda.kite.protocol import (
    MODE_FULL,
    DepthEntry,
    Tick,
    compute_change,
    decode_message,
    encode_message,
    encode_tick,
    price_divisor,
)

# (segment, tick size, typical price, carries OI): NSE, NFO, CDS, BSE, BCD, MCX.
_SEGMENTS: tuple[tuple[int, float, float, bool], ...] = (
    (1, 0.05, 2_500.0, False),
    (2, 0.05, 180.0, True),
    (3, 0.0025, 83.0, True),
    (4, 0.05, 900.0, False),
    (6, 0.0025, 83.5, True),
    (7, 1.0, 6_200.0, True),
)
_BASE_EPOCH = 1_700_000_000  # a fixed trading day: the frames must not depend on the clock


@dataclass(frozen=True)
class DecodeBenchResult:
    """Packets per second of each decoder over the same frames, per repeat."""

    packets: int
    messages: int
    ours_seconds: tuple[float, ...]
    official_seconds: tuple[float, ...]

    @property
    def ours_best(self) -> float:
        """Packets/s of our decoder in its fastest repeat (least disturbed by noise)."""
        return self.packets / min(self.ours_seconds)

    @property
    def official_best(self) -> float:
        """Packets/s of ``KiteTicker._parse_binary`` in its fastest repeat."""
        return self.packets / min(self.official_seconds)

    @property
    def ours_median(self) -> float:
        return self.packets / statistics.median(self.ours_seconds)

    @property
    def official_median(self) -> float:
        return self.packets / statistics.median(self.official_seconds)

    @property
    def ratio_best(self) -> float:
        """How many times faster we are, best repeat vs best repeat."""
        return self.ours_best / self.official_best

    @property
    def ratio_median(self) -> float:
        """Median over repeats of the ratio within one repeat (the two ran interleaved)."""
        return statistics.median(
            official / ours
            for ours, official in zip(self.ours_seconds, self.official_seconds, strict=True)
        )


@dataclass(slots=True)
class _Instrument:
    token: int
    tick_size: float
    has_oi: bool
    price: float
    volume: int = 0


def build_full_frames(packets: int, per_message: int = 50, seed: int = 7) -> list[bytes]:
    """``packets`` full-mode packets over a few hundred instruments, framed in messages
    of ``per_message`` packets. Same arguments, same bytes."""
    rng = random.Random(seed)
    instruments = []
    for i in range(300):
        segment, tick_size, price, has_oi = _SEGMENTS[i % len(_SEGMENTS)]
        token = ((100_000 + i) << 8) | segment
        instruments.append(_Instrument(token, tick_size, has_oi, price * rng.uniform(0.5, 2.0)))
    frames: list[bytes] = []
    batch: list[bytes] = []
    for n in range(packets):
        inst = instruments[n % len(instruments)]
        inst.price = max(inst.tick_size, inst.price + inst.tick_size * rng.randint(-3, 3))
        traded = rng.randint(1, 500)
        inst.volume += traded
        batch.append(encode_tick(_full_tick(rng, inst, traded, n)))
        if len(batch) == per_message:
            frames.append(encode_message(batch))
            batch = []
    if batch:
        frames.append(encode_message(batch))
    return frames


def _full_tick(rng: random.Random, inst: _Instrument, traded: int, n: int) -> Tick:
    token, tick_size, price, volume = inst.token, inst.tick_size, inst.price, inst.volume
    # Snap to the wire's resolution so the tick is exactly what the decoder will see.
    div = price_divisor(token)

    def on_wire(value: float) -> float:
        return round(value * div) / div

    last = on_wire(price)
    close = on_wire(price * rng.uniform(0.97, 1.03))
    bids = tuple(
        DepthEntry(rng.randint(1, 5_000), on_wire(last - tick_size * (i + 1)), rng.randint(1, 40))
        for i in range(5)
    )
    asks = tuple(
        DepthEntry(rng.randint(1, 5_000), on_wire(last + tick_size * (i + 1)), rng.randint(1, 40))
        for i in range(5)
    )
    oi = rng.randint(10_000, 5_000_000) if inst.has_oi else 0
    return Tick(
        token, MODE_FULL, True, last, traded, on_wire(price * 0.999), volume,
        rng.randint(0, 10**6), rng.randint(0, 10**6),
        on_wire(close * 1.001), on_wire(max(last, close) * 1.01),
        on_wire(min(last, close) * 0.99), close, compute_change(last, close),
        _BASE_EPOCH + n // 1000, oi, oi + oi // 10, oi - oi // 10, _BASE_EPOCH + n // 1000,
        bids, asks,
    )  # fmt: skip


_CHUNK_FRAMES = 10  # ~500 packets: short enough that both decoders see the same noise


def run_decode_benchmark(
    packets: int = 50_000, repeat: int = 5, per_message: int = 50, seed: int = 7
) -> DecodeBenchResult:
    """Decode the same frames ``repeat`` times with each decoder.

    Within a repeat the two decoders alternate every few frames, so a burst of load from
    another process on a shared machine lands on both, not on one of them; the per-repeat
    totals are what is reported. Raises ``RuntimeError`` if the two decoders do not
    return the same number of ticks: a benchmark of a decoder that drops packets would be
    meaningless.
    """
    if packets < 1 or repeat < 1:
        raise ValueError("packets and repeat must be at least 1")
    # Imported here: the official client pulls in Twisted, which only this command needs.
    from kiteconnect import KiteTicker

    frames = build_full_frames(packets, per_message, seed)
    chunks = [frames[i : i + _CHUNK_FRAMES] for i in range(0, len(frames), _CHUNK_FRAMES)]
    official = KiteTicker("bench", "bench")._parse_binary
    clock = time.perf_counter

    ours_seconds, official_seconds = [], []
    for _ in range(repeat):
        ours_total = official_total = 0.0
        ours_count = official_count = 0
        for chunk in chunks:
            start = clock()
            for frame in chunk:
                ours_count += len(decode_message(frame, 0).ticks)
            middle = clock()
            for frame in chunk:
                official_count += len(official(frame))
            end = clock()
            ours_total += middle - start
            official_total += end - middle
        if ours_count != packets or official_count != packets:
            raise RuntimeError(
                f"decoded {ours_count} (ours) / {official_count} (official) of {packets} packets"
            )
        ours_seconds.append(ours_total)
        official_seconds.append(official_total)
    return DecodeBenchResult(packets, len(frames), tuple(ours_seconds), tuple(official_seconds))
