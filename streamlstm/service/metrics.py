"""Every Prometheus metric the daemon exports, declared here on an injected registry.

Conventions (prometheus/client_python): base units (seconds, bytes), counters
end in ``_total``, label values are bounded: ``pipeline`` (from the config),
``outcome`` / ``reason`` / ``kind`` (fixed vocabularies), ``topic`` and
``partition`` (bounded by the source topics). A stream key becomes a label
value only in ``streamlstm_stream_alert_score``, and only for streams whose
alert is open, at most ``max_alert_series`` of them per pipeline (the highest
scores); ``streamlstm_alert_series_dropped`` says how many were left out.

Values the loop does not update per batch (live streams, state bytes, lag,
last checkpoint time, model info, streams in alert) are read at scrape time by a
custom collector from :class:`PipelineStatus` objects the loop publishes a
few times a second, so a scrape never walks the stream table while the loop
thread changes it.

Per-event histograms (score, latency, event-time lag) are :class:`ArrayHistogram`:
one ``numpy`` bucket count per batch instead of one ``observe`` call per event.

Length: one declaration per metric, kept together so that every name, unit and label
set the daemon exports (and the alert rules read) is in one place.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamlstm import __version__

# No `<name>_created` series beside every counter and histogram: they double the series
# and no dashboard or rule reads them (the daemon is the only user of this process).
disable_created_metrics()

PREFIX = "streamlstm_"
# Scores live in [0, 1]: the regime scorer's 0.5 is the default open threshold (distance
# 1), normal events spread below it; the forecast scorer's alerts live in the far tail.
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
LAG_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ArrayHistogram:
    """A labelled histogram fed with arrays; exported by :class:`StatusCollector`."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]):
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.bounds = np.asarray(sorted(buckets), np.float64)
        self._data: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()

    def observe_many(self, labels: Sequence[str], values: np.ndarray) -> None:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return
        counts = np.bincount(
            np.searchsorted(self.bounds, v, side="left"), minlength=len(self.bounds) + 1
        )
        key = tuple(labels)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                entry = self._data[key] = (np.zeros(len(self.bounds) + 1, np.int64), [0.0])
            entry[0][:] += counts
            entry[1][0] += float(v.sum())

    def collect(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        with self._lock:
            items = [(k, c.copy(), s[0]) for k, (c, s) in self._data.items()]
        for key, counts, total in items:
            cum = np.cumsum(counts)
            buckets = [(_fmt(b), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
            buckets.append(("+Inf", float(cum[-1])))
            fam.add_metric(list(key), buckets, total)
        return fam


def _fmt(b: float) -> str:
    return repr(float(b))


class InAlert(NamedTuple):
    """One stream whose alert is open, as the bounded per-stream series shows it."""

    key: str
    partition: int  # the Kafka partition (not the detector's group number)
    peak: float  # highest score of the open alert
    features: str = ""  # top features, "a,b"
    # for /alerts (not series labels): since when
    alert_id: str = ""  # the id of its records on the alerts topic
    opened_offset: int = -1  # Kafka offset of the event that opened it
    opened_time: float | None = None  # that event's time, if this process saw it open
    last_time: float | None = None  # event time of the stream's last event


@dataclass
class PipelineStatus:
    """What the loop publishes for scrape-time metrics and readiness."""

    pipeline: str
    live_streams: int = 0
    evicted_lru: int = 0
    evicted_idle: int = 0
    continued: int = 0  # streams started from the model's carried state (detector/carry.py)
    state_bytes: int = 0
    in_alert: list[InAlert] = field(default_factory=list)
    lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> records
    last_checkpoint: float | None = None  # unix time of the last durable checkpoint
    model: Mapping[str, str] = field(default_factory=dict)
    assigned: int = 0
    broker_up: bool = False
    ready: bool = False


class StatusCollector(Collector):
    """Scrape-time metrics from the published :class:`PipelineStatus` objects."""

    def __init__(
        self,
        statuses: Callable[[], Iterable[PipelineStatus]],
        histograms: Sequence[ArrayHistogram],
        max_alert_series: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._statuses = statuses
        self._histograms = histograms
        self._max = max_alert_series
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        statuses = list(self._statuses())
        live = GaugeMetricFamily(
            PREFIX + "live_streams", "Streams with state in memory.", labels=["pipeline"]
        )
        evicted = CounterMetricFamily(
            PREFIX + "evicted_streams",
            "Streams evicted from memory, by reason (lru: live-stream cap; idle: TTL).",
            labels=["pipeline", "reason"],
        )
        continued = CounterMetricFamily(
            PREFIX + "continued_streams",
            "Streams that started from the state their training history left (the model's "
            "carried states) instead of cold.",
            labels=["pipeline"],
        )
        state = GaugeMetricFamily(
            PREFIX + "state_bytes", "Bytes allocated for per-stream state.", labels=["pipeline"]
        )
        n_alert = GaugeMetricFamily(
            PREFIX + "streams_in_alert", "Streams whose alert is open.", labels=["pipeline"]
        )
        score = GaugeMetricFamily(
            PREFIX + "stream_alert_score",
            "Peak score of each stream whose alert is open (the highest max_alert_series).",
            labels=["pipeline", "stream", "partition", "top_features"],
        )
        dropped = GaugeMetricFamily(
            PREFIX + "alert_series_dropped",
            "Streams in alert left out of stream_alert_score by the max_alert_series cap.",
            labels=["pipeline"],
        )
        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag",
            "Records between the consumer position and the partition's high watermark.",
            labels=["pipeline", "topic", "partition"],
        )
        # A timestamp, not an age (Prometheus naming practice): alerts take time() - it.
        last_ckpt = GaugeMetricFamily(
            PREFIX + "last_checkpoint_timestamp_seconds",
            "Unix time of the last durable checkpoint (before the first: when the pipeline "
            "first held partitions, so a daemon that never checkpoints goes stale; absent "
            "while it never held any).",
            labels=["pipeline"],
        )
        info = GaugeMetricFamily(
            PREFIX + "model_info",
            "The model each pipeline runs (value 1).",
            labels=["pipeline", "cell", "layers", "hidden", "features", "sha256"],
        )
        assigned = GaugeMetricFamily(
            PREFIX + "assigned_partitions", "Partitions assigned.", labels=["pipeline"]
        )
        up = GaugeMetricFamily(
            PREFIX + "broker_up",
            "1 when the pipeline's Kafka broker answers, 0 while it is retried.",
            labels=["pipeline"],
        )
        ready = GaugeMetricFamily(
            PREFIX + "ready", "1 when the pipeline is ready (see /readyz).", labels=["pipeline"]
        )
        for s in statuses:
            p = s.pipeline
            live.add_metric([p], s.live_streams)
            evicted.add_metric([p, "lru"], s.evicted_lru)
            evicted.add_metric([p, "idle"], s.evicted_idle)
            continued.add_metric([p], s.continued)
            state.add_metric([p], s.state_bytes)
            n_alert.add_metric([p], len(s.in_alert))
            top = sorted(s.in_alert, key=lambda a: (-a.peak, a.key))[: self._max]
            for a in top:
                score.add_metric([p, a.key, str(a.partition), a.features], a.peak)
            dropped.add_metric([p], max(0, len(s.in_alert) - self._max))
            for (topic, part), n in sorted(s.lag.items()):
                lag.add_metric([p, topic, str(part)], n)
            if s.last_checkpoint is not None:
                last_ckpt.add_metric([p], s.last_checkpoint)
            if s.model:
                m = s.model
                info.add_metric(
                    [p, m.get("cell", ""), m.get("layers", ""), m.get("hidden", ""),
                     m.get("features", ""), m.get("sha256", "")],
                    1.0,
                )  # fmt: skip
            assigned.add_metric([p], s.assigned)
            up.add_metric([p], 1.0 if s.broker_up else 0.0)
            ready.add_metric([p], 1.0 if s.ready else 0.0)
        yield from (live, evicted, state, n_alert, score, dropped, lag, last_ckpt, info, assigned)
        yield from (up, ready, continued)
        for h in self._histograms:
            yield h.collect()


class Metrics:
    """The daemon's metrics on ``registry`` (a fresh one per test)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        max_alert_series: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self._statuses: dict[str, PipelineStatus] = {}
        self._lock = threading.Lock()
        r = registry
        p = ["pipeline"]
        self.events = Counter(
            PREFIX + "events", "Events by outcome (ok, imputed, or a rejection reason).",
            [*p, "outcome"], registry=r,
        )  # fmt: skip
        self.anomalies = Counter(
            PREFIX + "anomalous_events", "Events scoring at or above the open threshold.",
            p, registry=r,
        )  # fmt: skip
        self.transitions = Counter(
            PREFIX + "alert_transitions", "Alerts opened and closed.", [*p, "kind"], registry=r
        )
        self.sink_refused = Counter(
            PREFIX + "sink_refused",
            "Records the broker refused for their size: dead letters truncated, or dropped.",
            [*p, "kind"], registry=r,
        )  # fmt: skip
        self.sink_deduplicated = Counter(
            PREFIX + "sink_deduplicated",
            "Records not sent because they were already on their topic (a replay after a "
            "restore, or a failed send that had been written): alert, dead_letter.",
            [*p, "record"], registry=r,
        )  # fmt: skip
        self.sink_lookback_incomplete = Counter(
            PREFIX + "sink_lookback_incomplete",
            "Read-backs of the output topics cut short by their bounds or a broker error: "
            "the replay that followed may have sent records twice.",
            p, registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            PREFIX + "dead_letters", "Records sent to the dead-letter topic, by reason.",
            [*p, "reason"], registry=r,
        )  # fmt: skip
        self.alerts_sent = Counter(
            PREFIX + "alert_records", "Alert records produced to the alerts topic.", p, registry=r
        )
        self.batches = Counter(PREFIX + "batches", "Micro-batches processed.", p, registry=r)
        self.batch_seconds = Histogram(
            PREFIX + "batch_duration_seconds",
            "Wall time to decode, score and emit one micro-batch.",
            p, buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_seconds = Histogram(
            PREFIX + "checkpoint_duration_seconds",
            "Wall time to write a checkpoint (all partitions) durably.",
            p, buckets=CHECKPOINT_BUCKETS, registry=r,
        )  # fmt: skip
        self.state_restore_seconds = Histogram(
            PREFIX + "state_restore_seconds",
            "Wall time to restore one partition's state from its checkpoint store.",
            p, buckets=CHECKPOINT_BUCKETS, registry=r,
        )  # fmt: skip
        self.checkpoint_bytes = Gauge(
            PREFIX + "checkpoint_size_bytes", "Bytes of the last checkpoint (all partitions).",
            p, registry=r,
        )  # fmt: skip
        self.checkpoint_failures = Counter(
            PREFIX + "checkpoint_failures", "Checkpoints that could not be written.", p, registry=r
        )
        self.checkpoints_lost = Counter(
            PREFIX + "checkpoints_lost",
            "Partitions started cold because every checkpoint generation was unreadable "
            "(checkpoint.on_unreadable: start_cold): their streams' state was lost.",
            p, registry=r,
        )  # fmt: skip
        self.partition_conflicts = Counter(
            PREFIX + "stream_partition_conflicts",
            "A stream seen on a partition other than the one holding its state (producers "
            "not keying records by stream): at=event counts such events, at=restore the "
            "streams of a restored checkpoint already live on another partition.",
            [*p, "at"], registry=r,
        )  # fmt: skip
        self.commit_failures = Counter(
            PREFIX + "commit_failures", "Offset commits Kafka refused or timed out.", p, registry=r
        )
        self.broker_errors = Counter(
            PREFIX + "broker_errors",
            "Kafka operations that failed and will be retried (connect, poll, produce, commit).",
            [*p, "op"], registry=r,
        )  # fmt: skip
        self.rebalances = Counter(
            PREFIX + "partition_events", "Partitions assigned and revoked.",
            [*p, "kind"], registry=r,
        )  # fmt: skip
        self.model_reloads = Counter(
            PREFIX + "model_reloads", "SIGHUP model reloads by result.", [*p, "result"], registry=r
        )
        self.build_info = Gauge(
            PREFIX + "build_info", "streamlstm build (value 1).", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.score = ArrayHistogram(
            PREFIX + "score", "Scores of the scored events (0..1).", p, SCORE_BUCKETS
        )
        self.latency = ArrayHistogram(
            PREFIX + "processing_latency_seconds",
            "From the record's Kafka timestamp to the end of its batch's processing.",
            p, LATENCY_BUCKETS,
        )  # fmt: skip
        self.event_lag = ArrayHistogram(
            PREFIX + "event_time_lag_seconds",
            "From the event's own time to the end of its processing.",
            p, LAG_BUCKETS,
        )  # fmt: skip
        registry.register(
            StatusCollector(
                self.statuses, (self.score, self.latency, self.event_lag), max_alert_series, clock
            )
        )

    # -- published status ------------------------------------------------------------
    def publish(self, status: PipelineStatus) -> None:
        with self._lock:
            self._statuses[status.pipeline] = status

    def statuses(self) -> list[PipelineStatus]:
        with self._lock:
            return list(self._statuses.values())

    # -- per-batch updates -----------------------------------------------------------
    def record_outcomes(self, pipeline: str, counts: Mapping[str, int]) -> None:
        for outcome, n in counts.items():
            if n:
                self.events.labels(pipeline, outcome).inc(n)

    def init_pipeline(self, pipeline: str, outcomes: Iterable[str]) -> None:
        """Create the fixed-vocabulary series at 0 so rates work from the first scrape."""
        for o in outcomes:
            self.events.labels(pipeline, o)
        for k in ("opened", "closed"):
            self.transitions.labels(pipeline, k)
        for k in ("assigned", "revoked"):
            self.rebalances.labels(pipeline, k)
        self.anomalies.labels(pipeline)
        self.alerts_sent.labels(pipeline)
        for k in ("alert", "dead_letter"):
            self.sink_deduplicated.labels(pipeline, k)
        self.sink_lookback_incomplete.labels(pipeline)
        self.checkpoint_failures.labels(pipeline)
        self.checkpoints_lost.labels(pipeline)
        for at in ("event", "restore"):
            self.partition_conflicts.labels(pipeline, at)
        self.commit_failures.labels(pipeline)
