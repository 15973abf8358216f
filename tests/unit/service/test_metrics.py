"""Metrics on a fresh registry: names, units, bounded labels, scrape-time values."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from streamlstm.service.metrics import ArrayHistogram, InAlert, Metrics, PipelineStatus


def _metrics(max_series: int = 3) -> tuple[CollectorRegistry, Metrics]:
    reg = CollectorRegistry()
    return reg, Metrics(reg, max_alert_series=max_series, clock=lambda: 1000.0)


def test_counters_by_outcome_and_reason() -> None:
    reg, m = _metrics()
    m.init_pipeline("p", ["ok", "too_old"])
    m.record_outcomes("p", {"ok": 5, "too_old": 2, "missing": 0})
    m.dead_letters.labels("p", "not_json").inc(3)
    m.transitions.labels("p", "opened").inc()
    g = reg.get_sample_value
    assert g("streamlstm_events_total", {"pipeline": "p", "outcome": "ok"}) == 5
    assert g("streamlstm_events_total", {"pipeline": "p", "outcome": "too_old"}) == 2
    assert g("streamlstm_events_total", {"pipeline": "p", "outcome": "missing"}) is None
    assert g("streamlstm_dead_letters_total", {"pipeline": "p", "reason": "not_json"}) == 3
    assert g("streamlstm_alert_transitions_total", {"pipeline": "p", "kind": "opened"}) == 1
    assert g("streamlstm_alert_transitions_total", {"pipeline": "p", "kind": "closed"}) == 0
    assert (
        g(
            "streamlstm_build_info",
            {
                "version": __import__("streamlstm").__version__,
                "python": __import__("platform").python_version(),
            },
        )
        == 1
    )


def test_array_histogram_matches_cumulative_counts() -> None:
    h = ArrayHistogram("x_seconds", "doc", ["pipeline"], [1.0, 2.0])
    h.observe_many(["p"], np.array([0.5, 1.0, 1.5, 3.0, np.nan, np.inf]))
    h.observe_many(["p"], np.array([2.0]))
    fam = h.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in fam.samples}
    assert samples[("x_seconds_bucket", "1.0")] == 2  # le is inclusive
    assert samples[("x_seconds_bucket", "2.0")] == 4
    assert samples[("x_seconds_bucket", "+Inf")] == 5
    assert samples[("x_seconds_count", None)] == 5
    assert samples[("x_seconds_sum", None)] == 8.0


def test_score_histogram_is_exported() -> None:
    reg, m = _metrics()
    m.score.observe_many(["p"], np.array([0.1, 0.99995, 1.0]))
    g = reg.get_sample_value
    assert g("streamlstm_score_bucket", {"pipeline": "p", "le": "0.5"}) == 1
    assert g("streamlstm_score_bucket", {"pipeline": "p", "le": "0.999"}) == 1
    # the regime scorer's normal events spread below its 0.5 threshold: buckets there too
    assert g("streamlstm_score_bucket", {"pipeline": "p", "le": "0.2"}) == 1
    assert g("streamlstm_score_count", {"pipeline": "p"}) == 3


def test_stream_series_only_for_streams_in_alert_and_capped() -> None:
    reg, m = _metrics(max_series=3)
    in_alert = [InAlert(f"k{i}", i % 2, 0.99 + i / 1000, "temp,flow") for i in range(5)]
    m.publish(
        PipelineStatus(
            "p", live_streams=1000, evicted_lru=4, continued=6, state_bytes=123, in_alert=in_alert,
            lag={("t", 0): 7}, last_checkpoint=990.0,
            model={"cell": "lstm", "layers": "1", "hidden": "8", "features": "a", "sha256": "x"},
            assigned=2, broker_up=True, ready=True,
        )
    )  # fmt: skip
    g = reg.get_sample_value
    assert g("streamlstm_live_streams", {"pipeline": "p"}) == 1000
    assert g("streamlstm_evicted_streams_total", {"pipeline": "p", "reason": "lru"}) == 4
    assert g("streamlstm_continued_streams_total", {"pipeline": "p"}) == 6
    assert g("streamlstm_streams_in_alert", {"pipeline": "p"}) == 5
    assert g("streamlstm_alert_series_dropped", {"pipeline": "p"}) == 2
    assert g("streamlstm_consumer_lag", {"pipeline": "p", "topic": "t", "partition": "0"}) == 7
    assert g("streamlstm_last_checkpoint_timestamp_seconds", {"pipeline": "p"}) == 990.0
    assert g("streamlstm_ready", {"pipeline": "p"}) == 1
    text = generate_latest(reg).decode()
    series = [ln for ln in text.splitlines() if ln.startswith("streamlstm_stream_alert_score{")]
    assert len(series) == 3
    # The highest scores are the ones kept.
    assert all(f'stream="k{i}"' in text for i in (2, 3, 4))
    assert all('top_features="temp,flow"' in ln for ln in series)
    assert 'stream="k0"' not in text
    # No stream key leaks into any other series.
    others = [ln for ln in text.splitlines() if "k1" in ln]
    assert others == []


def test_every_counter_ends_in_total() -> None:
    reg, m = _metrics()
    m.init_pipeline("p", ["ok"])
    m.publish(PipelineStatus("p"))
    for fam in reg.collect():
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
