"""Derived streams: what the feed computes from the ticks it has already handed to Kafka.

Candles (``candles``), latest quotes (``quotes``), feed events (``events``) and Kite
order updates (``orders``) are pure cores; ``runner.DerivedStreams`` is the thin shell
that feeds them from the publisher, runs their timers and writes their topics through
its own producer (``sink``), never slowing or blocking the tick path.
"""
