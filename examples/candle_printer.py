"""An example strategy: print 1-minute candles as the feed closes them, pause on gaps.

    python examples/candle_printer.py --bootstrap 127.0.0.1:19092

At start it reads every instrument's current quote (``LatestQuotes.bootstrap()``), then
follows ``market.candles.1m`` together with ``market.feed.events``: while a connection
carrying an instrument is down its candles are reported as PAUSED instead of acted on,
and a candle whose bucket overlaps a reported gap (or that the feed marked incomplete)
is flagged. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from alphapanda.consumer import (
    CandleEvent,
    FeedConsumer,
    FeedEventRecord,
    GapTracker,
    LatestQuotes,
)


async def run(args: argparse.Namespace) -> int:
    quotes = await LatestQuotes.bootstrap(args.bootstrap, topic_prefix=args.prefix)
    print(f"START {len(quotes)} instruments with a current quote", flush=True)
    gaps = GapTracker()
    printed = 0
    consumer = FeedConsumer(
        args.bootstrap, topic_prefix=args.prefix, from_beginning=args.from_beginning
    )
    async with consumer:
        async for record in consumer.records(candles=args.interval, feed_events=True):
            if isinstance(record, FeedEventRecord):
                event = record.data
                was_paused = gaps.paused
                gaps.observe(event)
                if event.kind == "connection_down":
                    count = len(event.instruments or ())
                    print(f"PAUSED shard {event.shard} down ({event.reason}): {count} instruments")
                elif event.kind == "gap":
                    count = len(event.instruments or ())
                    print(
                        f"GAP shard {event.shard} {event.start:%H:%M:%S.%f} -> "
                        f"{event.end:%H:%M:%S.%f}: {count} instruments"
                    )
                if was_paused and not gaps.paused:
                    print("RESUMED")
                continue
            assert isinstance(record, CandleEvent)
            c = record.data
            if gaps.is_paused(c.instrument_token):
                print(f"PAUSED-SKIP {c.instrument_token} {c.start:%H:%M:%S}")
                continue
            flags = []
            if not c.complete:
                flags.append("incomplete")
            if gaps.overlaps(c.instrument_token, c.start, c.end):
                flags.append("gap")
            print(
                f"CANDLE {c.instrument_token} {c.interval} {c.start:%Y-%m-%d %H:%M:%S}Z "
                f"O={c.open} H={c.high} L={c.low} C={c.close} V={c.volume} n={c.ticks}"
                + (f" [{','.join(flags)}]" if flags else ""),
                flush=True,
            )
            printed += 1
            if args.max_candles and printed >= args.max_candles:
                break
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default="", help="the feed's ALPHAPANDA_KAFKA__TOPIC_PREFIX")
    parser.add_argument("--interval", default="1m", help="candle interval (default 1m)")
    parser.add_argument(
        "--from-beginning", action="store_true", help="read the topics from their start"
    )
    parser.add_argument("--max-candles", type=int, default=0, help="exit after N candles")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
