"""Prometheus exposition of the same samples the Redis collector ships.

``SamplesCollector`` is a ``prometheus_client`` custom collector: on every scrape it
pulls fresh samples (normally ``PipelineMetricsCollector.gather``) and turns them into
metric families named ``alphapanda_<sample.name>``. Nothing is cached between scrapes,
so ``/metrics`` and Redis can never disagree by more than one flush interval.

It lives in its own ``CollectorRegistry`` (never the process-global default one), so
tests and several feeds in one process cannot collide.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.asgi import make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from alphapanda.metrics.samples import Sample, SampleKind

log = logging.getLogger(__name__)

PREFIX = "alphapanda"
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Gather = Callable[[], Iterable[Sample]]


@dataclass
class _Family:
    kind: SampleKind
    help: str
    # label set (sorted pairs) → value; duplicates from several sources are summed.
    series: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


def _base_name(sample: Sample) -> str:
    # Counters are exposed as <base>_total; CounterMetricFamily adds the suffix itself.
    name = f"{PREFIX}_{sample.name}"
    if sample.kind == "counter" and name.endswith("_total"):
        return name[: -len("_total")]
    return name


def _valid(sample: Sample) -> bool:
    if not _METRIC_NAME.match(sample.name):
        return False
    return all(_LABEL_NAME.match(k) and not k.startswith("__") for k, _ in sample.labels)


class SamplesCollector:
    """Custom collector: ``gather()`` → counter and gauge metric families on each scrape.

    Samples with the same name and labels are summed (two buffers, two shards without a
    shard label). A name reported as both counter and gauge keeps the first kind seen;
    such and otherwise invalid samples are skipped and logged once per name.
    """

    def __init__(self, gather: Gather) -> None:
        self._gather = gather
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        families: dict[str, _Family] = {}
        for sample in self._gather():
            if not _valid(sample):
                self._warn_once(sample.name, "invalid metric or label name")
                continue
            base = _base_name(sample)
            family = families.get(base)
            if family is None:
                family = families[base] = _Family(sample.kind, sample.help or sample.name)
            elif family.kind != sample.kind:
                self._warn_once(sample.name, f"reported as {sample.kind} and {family.kind}")
                continue
            labels = tuple(sorted(sample.labels))
            family.series[labels] = family.series.get(labels, 0.0) + sample.value
        for base, family in sorted(families.items()):
            yield _build(base, family)

    def _warn_once(self, name: str, why: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("metric %r not exported to Prometheus: %s", name, why)


def _build(base: str, family: _Family) -> Metric:
    # One family needs one set of label names; a series lacking a label gets "", which
    # Prometheus treats as the label being absent.
    names = sorted({name for labels in family.series for name, _ in labels})
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(base, family.help, labels=names)
    else:
        metric = GaugeMetricFamily(base, family.help, labels=names)
    for labels, value in family.series.items():
        given = dict(labels)
        metric.add_metric([given.get(name, "") for name in names], value)
    return metric


def build_registry(
    gather: Gather, *, process_metrics: bool = False, pid: int | None = None
) -> CollectorRegistry:
    """A dedicated registry holding a ``SamplesCollector`` over ``gather``.

    ``process_metrics`` adds the standard ``process_*``/``python_info`` collectors (RSS,
    CPU, open fds), which is what an operator expects next to the feed's own figures:
    those of process ``pid`` (default: this one).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SamplesCollector(gather))
    if process_metrics:
        ProcessCollector(registry=registry, pid=lambda: "self" if pid is None else pid)
        PlatformCollector(registry=registry)
    return registry


def render_latest(registry: CollectorRegistry) -> tuple[bytes, str]:
    """``(body, content_type)`` for an HTTP ``/metrics`` response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def render_samples(samples: Iterable[Sample]) -> tuple[bytes, str]:
    """Exposition of a fixed list of samples, e.g. the ``samples`` of a Redis snapshot
    read by an API process that does not host the feed itself."""
    frozen = list(samples)
    return render_latest(build_registry(lambda: frozen))


def asgi_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app serving ``registry`` (mount it at ``/metrics``; gzip when asked)."""
    return make_asgi_app(registry=registry)
