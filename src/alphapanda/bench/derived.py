"""The cost of the derived streams on the tick path: ``bench e2e`` with them off and on.

Runs the end-to-end benchmark (``bench/e2e.py``: simulator → feed → Kafka acks,
consumer-verified) alternately with ``ALPHAPANDA_STREAMS__ENABLED`` false and true,
``rounds`` times each, in one invocation on the same broker and simulator settings, so
the two are measured side by side. Baseline and ceiling are left out (they do not
depend on the derived streams). The derived topics of every run are deleted at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import msgspec
from confluent_kafka.admin import AdminClient

from alphapanda.bench.e2e import E2EResult, run_e2e
from alphapanda.settings import Settings


class DerivedRun(msgspec.Struct):
    derived: bool
    result: E2EResult | None
    error: str | None = None


def _delete_prefixed(bootstrap: str, prefix: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result()


async def run_derived_ab(
    settings: Settings,
    *,
    seconds: float = 10.0,
    rate: float = 100_000.0,
    latency_rate: float = 20_000.0,
    rounds: int = 2,
    intervals: str = "1m",
    pregenerate: bool = True,
    progress: Callable[[str], None] = print,
) -> list[DerivedRun]:
    """``rounds`` × (off, on), alternating; candles at ``intervals`` when on."""
    prefix = f"{settings.kafka.topic_prefix}bench.derived.{uuid.uuid4().hex[:8]}."
    runs: list[DerivedRun] = []
    try:
        for _ in range(rounds):
            for derived in (False, True):
                run_settings = settings.model_copy(
                    update={
                        "kafka": settings.kafka.model_copy(update={"topic_prefix": prefix}),
                        "streams": settings.streams.model_copy(update={"enabled": derived}),
                        "candles": settings.candles.model_copy(update={"intervals": intervals}),
                    }
                )
                label = "on" if derived else "off"
                progress(f"derived streams {label}: running bench e2e ...")
                try:
                    result = await run_e2e(
                        run_settings,
                        seconds=seconds,
                        rate=rate,
                        latency_rate=latency_rate,
                        with_baseline=False,
                        with_ceiling=False,
                        pregenerate=pregenerate,
                    )
                except Exception as exc:  # one failed run must not hide the others
                    error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, BaseExceptionGroup):
                        error = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
                    progress(f"derived streams {label}: failed ({error})")
                    runs.append(DerivedRun(derived, None, error))
                    continue
                progress(
                    f"derived streams {label}: {result.feed_acked_per_s:,.0f} ticks/s acked, "
                    f"p99 {result.latency_p99_ms:.1f} ms"
                )
                runs.append(DerivedRun(derived, result))
    finally:
        await asyncio.to_thread(_delete_prefixed, settings.kafka.bootstrap_servers, prefix)
    return runs
