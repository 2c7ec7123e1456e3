"""The Redis key layout of the pipeline metrics, and the table that maps samples onto it.

Everything a reader of Redis needs to know lives here, so the writer
(``PipelineMetricsCollector``) and the readers (control API, ``alphapanda status``)
cannot drift apart. All keys share the prefix ``pipeline:market_ticks:<namespace>:``
(namespace ``market`` by default, the name Alpha Panda consumers already read) and
every key carries the TTL ``settings.metrics.key_ttl_seconds``, so a feed that stops
leaves no stale figures behind for longer than that.

Key (after the prefix)     Redis type  Meaning
-------------------------  ----------  ------------------------------------------------
count                      string      total ticks received (int)
last_activity              string      ISO-8601 UTC time of the last tick ("" if none yet)
last_tick_age_seconds      string      seconds since the last tick at flush time ("" if none)
ticks_per_second           string      ticks received per second over the last interval
sends:ok                   string      messages acknowledged by the broker (int)
sends:failed               string      messages whose delivery failed (int)
send_latency:p50|p90|p99|max string    receipt → broker-ack latency, seconds
reconnects                 hash        reason → attempts (int)
drops                      hash        reason → ticks dropped (int)
malformed                  hash        reason → packets/fields rejected (int)
buffer_depth               string      ticks waiting in the buffer (int)
spool_bytes                string      bytes in the disk spool (int)
spool_messages             string      messages in the disk spool (int)
connections                hash        shard id → JSON object of that shard's figures
updated_at                 string      ISO-8601 UTC time of this flush
snapshot                   string      the whole snapshot as one JSON document

The ``snapshot`` document is the convenient one to read: it holds every key above under
the same names (``sends``/``send_latency``/``spool`` as nested objects), the derived
``rates`` of every counter, and ``samples``, the raw samples of every source.

Which metric feeds which key is declared in ``DEFAULT_RULES`` — the one table the
collector (Redis) and the control API's ``/status`` both use. It names metrics only
through their entries in ``alphapanda.metrics.catalog``, where every metric is declared;
a metric no rule names still reaches the snapshot's ``samples`` list and Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from alphapanda.metrics import catalog
from alphapanda.metrics.samples import Sample

KEY_ROOT = "pipeline:market_ticks"

# Suffixes, in one place. Readers import these rather than spelling strings.
COUNT = "count"
LAST_ACTIVITY = "last_activity"
LAST_TICK_AGE = "last_tick_age_seconds"
TICKS_PER_SECOND = "ticks_per_second"
SENDS_OK = "sends:ok"
SENDS_FAILED = "sends:failed"
LATENCY_P50 = "send_latency:p50"
LATENCY_P90 = "send_latency:p90"
LATENCY_P99 = "send_latency:p99"
LATENCY_MAX = "send_latency:max"
RECONNECTS = "reconnects"
DROPS = "drops"
MALFORMED = "malformed"
BUFFER_DEPTH = "buffer_depth"
SPOOL_BYTES = "spool_bytes"
SPOOL_MESSAGES = "spool_messages"
CONNECTIONS = "connections"
UPDATED_AT = "updated_at"
SNAPSHOT = "snapshot"

# The label that puts a sample into a shard's row of the ``connections`` hash.
SHARD_LABEL = "shard"

Shape = Literal["scalar", "hash"]


@dataclass(frozen=True, slots=True)
class KeyRule:
    """``sample`` (optionally only those whose label ``match`` equals a value) → ``key``.

    A scalar key holds the sum over every matching sample (e.g. over shards); a hash
    key holds one field per value of ``field_label``, summed over the other labels.
    With ``zero_with``, a scalar key no sample fed is 0 (not missing) while a sample of
    that name is present: counter families whose members appear only once counted
    (``sends_failed_total{error}``) then read 0 while their component reports.
    """

    key: str
    sample: str
    shape: Shape = "scalar"
    field_label: str = ""
    match: tuple[str, str] | None = None
    zero_with: str = ""


DEFAULT_RULES: tuple[KeyRule, ...] = (
    KeyRule(COUNT, catalog.TICKS_RECEIVED.name),
    KeyRule(SENDS_OK, catalog.SENDS_OK.name),
    KeyRule(SENDS_FAILED, catalog.SENDS_FAILED.name, zero_with=catalog.SENDS_OK.name),
    KeyRule(LATENCY_P50, catalog.SEND_LATENCY_SECONDS.name, match=("quantile", "0.5")),
    KeyRule(LATENCY_P90, catalog.SEND_LATENCY_SECONDS.name, match=("quantile", "0.9")),
    KeyRule(LATENCY_P99, catalog.SEND_LATENCY_SECONDS.name, match=("quantile", "0.99")),
    KeyRule(LATENCY_MAX, catalog.SEND_LATENCY_SECONDS.name, match=("quantile", "1")),
    KeyRule(DROPS, catalog.TICKS_DROPPED.name, "hash", "reason"),
    KeyRule(BUFFER_DEPTH, catalog.BUFFER_DEPTH.name),
    KeyRule(SPOOL_BYTES, catalog.SPOOL_BYTES.name),
    KeyRule(SPOOL_MESSAGES, catalog.SPOOL_MESSAGES.name),
    KeyRule(RECONNECTS, catalog.KITE_RECONNECT_ATTEMPTS.name, "hash", "reason"),
    KeyRule(MALFORMED, catalog.KITE_SKIPPED_PACKETS.name, "hash", "reason"),
    KeyRule(MALFORMED, catalog.TICKS_MALFORMED.name, "hash", "reason"),
)

# Keys whose figure is a latency percentile: the worst shard is the honest summary,
# summing percentiles would be meaningless.
_MAX_REDUCED = frozenset({LATENCY_P50, LATENCY_P90, LATENCY_P99, LATENCY_MAX})


@dataclass(frozen=True, slots=True)
class MetricsKeys:
    """Full key names for one namespace: ``MetricsKeys("market").key(COUNT)``."""

    namespace: str = "market"

    @property
    def prefix(self) -> str:
        return f"{KEY_ROOT}:{self.namespace}:"

    def key(self, suffix: str) -> str:
        return self.prefix + suffix

    def all_keys(self) -> list[str]:
        """Every key the collector writes (for readers, cleanup and tests)."""
        return [self.key(suffix) for suffix in ALL_SUFFIXES]


ALL_SUFFIXES: tuple[str, ...] = (
    COUNT,
    LAST_ACTIVITY,
    LAST_TICK_AGE,
    TICKS_PER_SECOND,
    SENDS_OK,
    SENDS_FAILED,
    LATENCY_P50,
    LATENCY_P90,
    LATENCY_P99,
    LATENCY_MAX,
    RECONNECTS,
    DROPS,
    MALFORMED,
    BUFFER_DEPTH,
    SPOOL_BYTES,
    SPOOL_MESSAGES,
    CONNECTIONS,
    UPDATED_AT,
    SNAPSHOT,
)
HASH_SUFFIXES = frozenset({RECONNECTS, DROPS, MALFORMED, CONNECTIONS})


def _label(sample: Sample, name: str) -> str | None:
    for key, value in sample.labels:
        if key == name:
            return value
    return None


def _same_label_value(actual: str | None, wanted: str) -> bool:
    if actual is None:
        return False
    if actual == wanted:
        return True
    # "1" and "1.0" are the same quantile.
    try:
        return float(actual) == float(wanted)
    except ValueError:
        return False


def apply_rules(
    samples: Iterable[Sample], rules: Iterable[KeyRule] = DEFAULT_RULES
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Reduce samples to ``(scalars, hashes)`` keyed by suffix, per the declared rules.

    Only keys that at least one sample fed are present, so a missing component shows as
    a missing figure rather than a misleading zero.
    """
    by_name: dict[str, list[KeyRule]] = {}
    for rule in rules:
        by_name.setdefault(rule.sample, []).append(rule)
    scalars: dict[str, float] = {}
    hashes: dict[str, dict[str, float]] = {}
    seen: set[str] = set()
    for sample in samples:
        seen.add(sample.name)
        for rule in by_name.get(sample.name, ()):
            if rule.match is not None and not _same_label_value(
                _label(sample, rule.match[0]), rule.match[1]
            ):
                continue
            if rule.shape == "hash":
                field = _label(sample, rule.field_label) or "unknown"
                fields = hashes.setdefault(rule.key, {})
                fields[field] = fields.get(field, 0.0) + sample.value
            elif rule.key in _MAX_REDUCED:
                scalars[rule.key] = max(scalars.get(rule.key, sample.value), sample.value)
            else:
                scalars[rule.key] = scalars.get(rule.key, 0.0) + sample.value
    for rules_of_sample in by_name.values():
        for rule in rules_of_sample:
            if rule.zero_with and rule.zero_with in seen and rule.shape == "scalar":
                scalars.setdefault(rule.key, 0.0)
    return scalars, hashes


def connections_from(samples: Iterable[Sample]) -> dict[str, dict[str, object]]:
    """Per-shard figures: every sample labelled ``shard`` lands in that shard's object.

    ``connection_state{shard, state} 1`` becomes ``{"state": state}``; any other sample
    becomes ``{name: value}`` (summed over its remaining labels).
    """
    shards: dict[str, dict[str, object]] = {}
    for sample in samples:
        shard = _label(sample, SHARD_LABEL)
        if shard is None:
            continue
        figures = shards.setdefault(shard, {})
        if sample.name == catalog.CONNECTION_STATE.name:
            if sample.value:
                figures["state"] = _label(sample, "state") or "unknown"
            continue
        previous = figures.get(sample.name, 0.0)
        figures[sample.name] = (previous if isinstance(previous, float) else 0.0) + sample.value
    return shards


def plain_number(value: float) -> int | float:
    """Integers stay integers in Redis and JSON (``12`` rather than ``12.0``)."""
    if value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def render_hash(fields: Mapping[str, float]) -> dict[str, int | float]:
    return {name: plain_number(value) for name, value in sorted(fields.items())}
