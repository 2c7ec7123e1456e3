"""Pre-built ticks for benchmarks: generate and encode ahead of time, send cheaply later.

Generating and encoding a full-mode tick costs the simulator roughly as much CPU as the
feed spends receiving and publishing it, so on a shared 2-core machine the simulator,
not the feed, capped ``bench e2e``. :class:`PregenBuffer` moves that cost before the
measurement: it runs the SAME :class:`~alphapanda.sim.market.Market` ahead of time and
keeps each instrument's next packets, encoded in full mode, in a FIFO. The sender takes
from the FIFO and only generates live once it is empty, so every instrument's
``volume_traded`` sequence stays one unbroken path (the ledger still proves
completeness): both the filler and the live path advance the same book, one tick at a
time, in order.

A lower mode's packet is a prefix of the full-mode packet in Kite's layout (ltp 8 bytes,
quote 44, full 184; indices 8/28/32), so one stored packet serves every mode by slicing.

Memory: one ``bytes`` object per buffered tick, about 220 bytes for a full packet (184
payload + object header) and ~60 for an index; ``limit`` caps the total count (e.g.
1.5M ticks ≈ 330 MB).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from alphapanda.kite.protocol import (
    MODE_FULL,
    MODE_LTP,
    MODE_QUOTE,
    SEGMENT_INDICES,
    encode_tick,
)
from alphapanda.sim.market import Market

log = logging.getLogger(__name__)

# Packet length by mode for (non-index, index) instruments: the prefix to slice.
_LENGTH = {MODE_LTP: (8, 8), MODE_QUOTE: (44, 28), MODE_FULL: (184, 32)}


class PregenBuffer:
    """Per-instrument FIFOs of full-mode packets generated ahead of time (sans-I/O).

    ``fill`` is a generator so the caller can yield to its event loop between slices;
    ``take`` is the sender's fast path.
    """

    def __init__(self, market: Market, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._market = market
        self._limit = limit
        self._fifos: dict[int, deque[bytes]] = {}
        self.buffered = 0  # packets waiting in all FIFOs
        self.generated = 0  # packets ever built ahead of time
        self.taken = 0  # packets handed to the sender
        self.ready = False  # a fill_once_settled() fill has completed

    def __len__(self) -> int:
        return self.buffered

    def fill(
        self, tokens: Sequence[int], per_token: int, start_s: int, span_s: float
    ) -> Iterator[int]:
        """Top every FIFO of ``tokens`` up to ``per_token`` packets (within ``limit``),
        yielding after each instrument how many packets were built so far.

        Timestamps (``last_trade_time``, ``exchange_timestamp``, whole seconds) are
        spread from ``start_s`` over ``span_s`` seconds: when the packets are expected
        to go out, not when they were built.
        """
        built = 0
        advance = self._market.advance
        for token in tokens:
            fifo = self._fifos.get(token)
            if fifo is None:
                fifo = self._fifos[token] = deque()
            want = min(per_token - len(fifo), self._limit - self.buffered)
            if want <= 0:
                continue
            append = fifo.append
            step = span_s / max(per_token, 1)
            # The first new packet goes out after the ones already queued.
            offset = len(fifo)
            for i in range(want):
                now_s = start_s + int((offset + i) * step)
                append(encode_tick(advance(token, now_s, MODE_FULL)))
            self.buffered += want
            self.generated += want
            built += want
            yield built

    def has(self, token: int) -> bool:
        """True if ``token`` has a pre-built packet waiting."""
        fifo = self._fifos.get(token)
        return bool(fifo)

    def take(self, token: int) -> bytes | None:
        """``token``'s next full-mode packet, or None when it has none left (generate
        it live then)."""
        fifo = self._fifos.get(token)
        if not fifo:
            return None
        self.buffered -= 1
        self.taken += 1
        return fifo.popleft()

    @staticmethod
    def narrow(token: int, packet: bytes, mode: str) -> bytes:
        """The full-mode ``packet`` as a ``mode`` subscriber receives it."""
        if mode == MODE_FULL:
            return packet
        return packet[: _LENGTH[mode][token & 0xFF == SEGMENT_INDICES]]


async def fill_once_settled(
    pregen: PregenBuffer,
    active_tokens: Callable[[], list[int]],
    *,
    seconds: float,
    rate: float,
    stopping: asyncio.Event,
    settle: float = 0.5,
) -> None:
    """Once ``active_tokens()`` has stayed the same for ``settle`` seconds, fill
    ``pregen`` with ``seconds`` × ``rate`` ticks spread over those instruments, once:
    later runs on the same simulator (a benchmark's baseline step) must not pay for a
    refill mid-run. Returns early when ``stopping`` is set."""
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    seen_since = loop.time()
    while not stopping.is_set():
        # A polling cadence: subscriptions arrive as client messages, not events here.
        await asyncio.sleep(0.2)
        tokens = active_tokens()
        if tokens != seen:
            seen, seen_since = tokens, loop.time()
            continue
        if not tokens or loop.time() - seen_since < settle:
            continue
        per_token = math.ceil(seconds * rate / len(tokens))
        started = time.monotonic()
        for _built in pregen.fill(tokens, per_token, int(time.time()), seconds):
            # One instrument per slice (a few ms): heartbeats and admin calls go on.
            await asyncio.sleep(0)
            if stopping.is_set():
                return
        pregen.ready = True
        log.info(
            "pregenerated %d ticks for %d instruments in %.1fs",
            len(pregen),
            len(tokens),
            time.monotonic() - started,
        )
        return
