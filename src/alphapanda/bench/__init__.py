"""Benchmarks: the feed end to end, and the two points it is compared with.

``baseline`` reproduces the original design (official ``KiteTicker`` thread, one
``run_coroutine_threadsafe`` per tick, per-tick aiokafka send and two Redis calls per
tick); ``ceiling`` is a bare producer loop of pre-encoded records, the most the broker
takes from one Python process; ``decode`` times our protocol decoder against the
official ``kiteconnect`` parser on the same frames. All return plain numbers; the CLI
formats them.
"""
