"""Pieces the long-running benchmarks share: a simulator process and a live ledger.

``SimProcess`` runs ``alphapanda sim`` as a child process on free ports (so it never
competes with the feed for the GIL) and drives its admin HTTP API.

``StreamLedger`` is the consumer-side loss check while a run is going on: it follows
the topic from the beginning in a worker thread and checks, record by record, that
each instrument's ``volume_traded`` grows by exactly its ``last_traded_quantity``
(no gap, no duplicate, no reordering). It also measures how long each tick took from
the feed's receipt of its frame to being readable by a consumer, bucketed by the
second it was received, so a run can say how much a fault delayed ticks. Memory is
O(instruments + seconds of run), never O(ticks).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from confluent_kafka import Consumer, KafkaError, TopicPartition

# -- the simulator ------------------------------------------------------------------


class SimProcess:
    """``alphapanda sim`` in a child process: ``async with SimProcess(...) as sim: ...``."""

    def __init__(
        self,
        *,
        ticks_per_second: float,
        instruments: Path | None = None,
        seed: int = 0,
        cwd: Path | None = None,
        pregenerate: float = 0.0,
        pregenerate_rate: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._argv = [
            "-m",
            "alphapanda",
            "sim",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--ticks-per-second",
            str(ticks_per_second),
            "--seed",
            str(seed),
        ]
        if instruments is not None:
            self._argv += ["--instruments", str(instruments)]
        if pregenerate > 0:
            self._argv += ["--pregenerate", str(pregenerate)]
        if pregenerate_rate is not None:
            self._argv += ["--pregenerate-rate", str(pregenerate_rate)]
        self._argv += list(extra_args)
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self.ws_url = ""
        self.admin_url = ""
        self.api_key = "alphapanda-dev"
        self.access_token = "dev-access-token"

    @property
    def pid(self) -> int | None:
        """The simulator's process id while it runs (to read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    async def __aenter__(self) -> SimProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._argv,
            cwd=self._cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                line = await self._proc.stdout.readline()  # the sim_ready line, or EOF
        except TimeoutError:
            line = b""
        if not line:
            await self.__aexit__()
            raise RuntimeError("alphapanda sim failed to start")
        ready = json.loads(line)
        self.ws_url, self.admin_url = ready["ws_url"], ready["admin_url"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One admin request; returns the decoded JSON body."""
        async with httpx.AsyncClient(base_url=self.admin_url, timeout=10) as client:
            response = await client.request(method, path, **kwargs)
            response.raise_for_status()
            return response.json()

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/stats")
        return result

    async def set_rate(self, ticks_per_second: float) -> None:
        await self.call("POST", "/rate", params={"ticks_per_second": ticks_per_second})


# -- the consumer-side ledger -----------------------------------------------------------


class _Data(msgspec.Struct):
    instrument_token: int
    received_at_ns: int
    volume_traded: int | None = None
    last_traded_quantity: int | None = None


class _Event(msgspec.Struct):
    data: _Data


@dataclass
class LedgerFigures:
    """What the ledger has seen so far (a copy; safe to keep)."""

    consumed: int = 0
    gaps: int = 0  # a tick missing between two consumed ones (volume jumped)
    duplicates_or_reordered: int = 0  # volume did not grow
    undecodable: int = 0
    per_instrument: dict[int, int] = field(default_factory=dict)
    first_gaps: list[tuple[int, int, int]] = field(default_factory=list)  # token, want, got

    @property
    def problems(self) -> int:
        return self.gaps + self.duplicates_or_reordered + self.undecodable


class StreamLedger:
    """Follows ``topic`` from offset 0 in a worker thread; see the module doc.

    ``start()`` / ``stop()``; ``figures()`` and ``max_delay_ms(from_ns, to_ns)`` may be
    called from any thread while it runs.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        security: dict[str, Any] | None = None,
        *,
        keep_delays: bool = False,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        # librdkafka security keys (``alphapanda.kafka_security.security_config``).
        self._security = dict(security or {})
        self._lock = threading.Lock()
        self._figures = LedgerFigures()
        self._last_volume: dict[int, int] = {}
        # received second -> max delay (ns) of the ticks received in it
        self._delay_by_second: dict[int, int] = {}
        # Every (receive time, receipt -> consumer delay) in ns, for percentiles
        # (``keep_delays``).
        self._delays: list[tuple[int, int]] | None = [] if keep_delays else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-ledger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def figures(self) -> LedgerFigures:
        with self._lock:
            f = self._figures
            return LedgerFigures(
                f.consumed,
                f.gaps,
                f.duplicates_or_reordered,
                f.undecodable,
                dict(f.per_instrument),
                list(f.first_gaps),
            )

    def max_delay_ms(self, from_ns: int = 0, to_ns: int = 2**63) -> float:
        """Largest receipt → consumer delay of the ticks received in ``[from_ns, to_ns]``."""
        first, last = from_ns // 1_000_000_000, to_ns // 1_000_000_000
        with self._lock:
            delays = [d for s, d in self._delay_by_second.items() if first <= s <= last]
        return max(delays, default=0) / 1e6

    def delay_percentiles_ms(self, *quantiles: float, since_ns: int = 0) -> list[float]:
        """Receipt -> consumer delay at ``quantiles`` of the ticks consumed so far that
        were received at or after ``since_ns`` (needs ``keep_delays``)."""
        if self._delays is None:
            raise RuntimeError("StreamLedger(keep_delays=True) keeps the delays")
        with self._lock:
            delays = sorted(d for received, d in self._delays if received >= since_ns)
        if not delays:
            return [0.0 for _ in quantiles]
        return [delays[min(len(delays) - 1, int(q * len(delays)))] / 1e6 for q in quantiles]

    def missing_against(self, sent: dict[str, int]) -> dict[int, tuple[int, int]]:
        """Instruments whose consumed count differs from the simulator's ``ticks_sent``."""
        got = self.figures().per_instrument
        expected = {int(t): int(n) for t, n in sent.items() if int(n)}
        tokens = set(expected) | set(got)
        return {
            t: (expected.get(t, 0), got.get(t, 0))
            for t in tokens
            if expected.get(t, 0) != got.get(t, 0)
        }

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": f"ledger-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "topic.metadata.refresh.interval.ms": 2000,
                # Delays are measured at the consumer: do not let the broker sit on a
                # fetch for its default 500 ms.
                "fetch.wait.max.ms": 10,
                # Broker outages are the point of some runs: librdkafka's connection
                # errors (level 3) would flood the console; real errors still surface
                # through message.error() and self.error.
                "log_level": 2,
                **self._security,
            }
        )
        json_decode = msgspec.json.Decoder(_Event).decode
        pack_decode = msgspec.msgpack.Decoder(_Event).decode
        try:
            self._assign(consumer)
            while not self._stop.is_set():
                messages = consumer.consume(2000, 0.05)
                now = time.time_ns()
                with self._lock:
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() != KafkaError._PARTITION_EOF:
                                self.error = str(error)
                            continue
                        self._check(message, now, json_decode, pack_decode)
        except Exception as exc:  # reported by the run, which then fails
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set():
            metadata = consumer.list_topics(timeout=5)
            topic = metadata.topics.get(self._topic)
            if topic is not None and topic.error is None and topic.partitions:
                consumer.assign([TopicPartition(self._topic, p, 0) for p in topic.partitions])
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self._topic} never appeared")
            self._stop.wait(0.5)

    def _check(self, message: Any, now: int, json_decode: Any, pack_decode: Any) -> None:
        f = self._figures
        headers = dict(message.headers() or ())
        try:
            raw = message.value()
            if headers.get("content-type") == b"application/msgpack":
                event = pack_decode(raw)
            else:
                event = json_decode(raw)
        except (msgspec.DecodeError, TypeError):
            f.undecodable += 1
            return
        data = event.data
        token = data.instrument_token
        f.consumed += 1
        f.per_instrument[token] = f.per_instrument.get(token, 0) + 1
        second = data.received_at_ns // 1_000_000_000
        delay = now - data.received_at_ns
        if delay > self._delay_by_second.get(second, -1):
            self._delay_by_second[second] = delay
        if self._delays is not None:
            self._delays.append((data.received_at_ns, delay))
        volume, quantity = data.volume_traded, data.last_traded_quantity
        if volume is None or quantity is None:
            return  # indices carry no volume: counted only
        previous = self._last_volume.get(token)
        if previous is not None and volume != previous + quantity:
            if volume <= previous:
                f.duplicates_or_reordered += 1
            else:
                f.gaps += 1
                if len(f.first_gaps) < 10:
                    f.first_gaps.append((token, previous + quantity, volume))
        self._last_volume[token] = volume


async def until(
    condition: Callable[[], object], within: float, what: str, interval: float = 0.05
) -> None:
    """Wait until ``condition()`` (a plain or a coroutine function) is truthy; a
    ``TimeoutError`` naming ``what`` after ``within`` seconds. The benchmarks' one wait
    loop (the runtime package cannot use ``alphapanda.testing``)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f} s waiting for: {what}")
        await asyncio.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
