"""Tests of the synthetic fleet generator (streamlstm.examples.synth)."""

from __future__ import annotations

import csv
import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.errors import ConfigError
from streamlstm.evaluation.labels import load_labels
from streamlstm.examples.synth import (
    ALL_KINDS,
    Anomaly,
    Fleet,
    FleetSpec,
    generate_fleet,
    stream_events,
)

SPEC = FleetSpec(n_streams=8, n_steps=600, anomaly_rate=3.0, seed=7)
STEPS_PER_DAY = 1440  # at the default period_s of 60 s

# Lower bounds on the root-mean-square change inside a kind's windows, in standard
# deviations of the clean channel: the anomalies must stand out, not just differ.
MIN_RMS_CHANGE = {
    "spike": 2.0,
    "level_shift": 1.0,
    "drift": 0.6,
    "variance_change": 0.3,
    "frequency_change": 0.3,
    "correlation_break": 0.3,
}
MAX_RMS_CHANGE = 10.0  # ... but not absurdly


def clean(spec: FleetSpec) -> FleetSpec:
    return replace(spec, anomaly_rate=0.0)


def window(fleet: Fleet, a: Anomaly) -> slice:
    """Step indices of an anomaly (its end time is inclusive)."""
    lo, hi = np.searchsorted(fleet.times, [a.start, a.end])
    return slice(int(lo), int(hi) + 1)


def assert_same_fleet(a: Fleet, b: Fleet) -> None:
    assert a.keys == b.keys
    assert a.features == b.features
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.anomalies == b.anomalies


def test_same_seed_gives_same_fleet() -> None:
    assert_same_fleet(generate_fleet(SPEC), generate_fleet(SPEC))
    other = generate_fleet(replace(SPEC, seed=8))
    assert not np.array_equal(other.values, generate_fleet(SPEC).values)


def test_shapes_and_dtypes() -> None:
    fleet = generate_fleet(SPEC)
    n, t, f = SPEC.n_streams, SPEC.n_steps, len(SPEC.features)
    assert fleet.values.shape == (n, t, f) and fleet.values.dtype == np.float32
    assert fleet.labels.shape == (n, t) and fleet.labels.dtype == np.bool_
    assert fleet.times.shape == (t,) and fleet.times.dtype == np.float64
    assert fleet.features == SPEC.features
    np.testing.assert_array_equal(fleet.times, SPEC.start_time + SPEC.period_s * np.arange(t))
    assert len(set(fleet.keys)) == n and fleet.keys == sorted(fleet.keys)
    assert all(k.startswith(SPEC.key_prefix) for k in fleet.keys)
    assert np.isfinite(fleet.values).all()
    assert fleet.anomalies, "anomaly_rate=3 should inject some anomalies"
    assert all(isinstance(a.start, float) and isinstance(a.end, float) for a in fleet.anomalies)


def test_clean_fleet_has_no_anomalies() -> None:
    fleet = generate_fleet(clean(SPEC))
    assert fleet.anomalies == [] and not fleet.labels.any()
    assert fleet.windows() == {k: [] for k in fleet.keys}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_changes_its_window_and_nothing_else(kind: str) -> None:
    # Two days, so that the clean channel's std below covers its daily cycle.
    spec = replace(SPEC, n_steps=2 * STEPS_PER_DAY, kinds=(kind,), anomaly_rate=6.0, seed=11)
    fleet, base = generate_fleet(spec), generate_fleet(clean(spec))
    assert fleet.anomalies and {a.kind for a in fleet.anomalies} == {kind}
    outside = ~fleet.labels
    np.testing.assert_array_equal(fleet.values[outside], base.values[outside])

    std = base.values.astype(np.float64).std(axis=1)  # (S, F)
    changes = []
    for a in fleet.anomalies:
        s, w = fleet.keys.index(a.key), window(fleet, a)
        hit = [fleet.features.index(f) for f in a.features]
        missed = [i for i in range(len(fleet.features)) if i not in hit]
        if kind == "correlation_break":
            assert len(hit) == 1
        got, want = fleet.values[s, w], base.values[s, w]
        np.testing.assert_array_equal(got[:, missed], want[:, missed])
        # Every kind already changes the first step of its window, on every channel it hits.
        assert (got[0, hit] != want[0, hit]).all(), a
        if kind == "stuck":
            assert (got[:, hit] == fleet.values[s, w.start - 1, hit]).all()
        changes.append((got[:, hit] - want[:, hit]) / std[s, hit])
    rms = float(np.sqrt(np.mean(np.concatenate([c.ravel() for c in changes]) ** 2)))
    if kind != "stuck":  # stuck is subtle by nature: the signal merely stops moving
        assert MIN_RMS_CHANGE[kind] <= rms <= MAX_RMS_CHANGE, rms


def test_labels_match_windows() -> None:
    fleet = generate_fleet(SPEC)
    windows = fleet.windows()
    assert set(windows) == set(fleet.keys)
    assert sum(map(len, windows.values())) == len(fleet.anomalies)
    for s, key in enumerate(fleet.keys):
        expected = np.zeros(SPEC.n_steps, dtype=bool)
        for start, end in windows[key]:
            assert start <= end
            inside = (fleet.times >= start) & (fleet.times <= end)
            assert not (expected & inside).any(), "windows of one stream overlap"
            expected |= inside
        np.testing.assert_array_equal(fleet.labels[s], expected)
    assert not fleet.labels[:, 0].any(), "step 0 has no step before it and stays clean"
    starts = [(a.start, a.key) for a in fleet.anomalies]
    assert starts == sorted(starts)


def test_spike_is_short_and_windows_respect_lengths() -> None:
    fleet = generate_fleet(replace(SPEC, anomaly_rate=5.0, min_len=7, max_len=9))
    for a in fleet.anomalies:
        n = window(fleet, a).stop - window(fleet, a).start
        assert 1 <= n <= 3 if a.kind == "spike" else 7 <= n <= 9, a


def test_daily_seasonality() -> None:
    fleet = generate_fleet(FleetSpec(n_streams=6, n_steps=3 * STEPS_PER_DAY, anomaly_rate=0))
    v = fleet.values.astype(np.float64)
    z = (v - v.mean(axis=1, keepdims=True)) / v.std(axis=1, keepdims=True)

    def acf(lag: int) -> float:
        return float((z[:, lag:] * z[:, :-lag]).mean())

    assert acf(STEPS_PER_DAY) > 0.3
    assert acf(STEPS_PER_DAY // 2) < 0.0  # half a day apart: opposite phase


def test_channels_are_correlated_and_streams_differ() -> None:
    fleet = generate_fleet(replace(clean(SPEC), n_steps=1000))
    v = fleet.values.astype(np.float64)
    upper = np.triu_indices(len(fleet.features), 1)
    corr = np.array([np.corrcoef(v[s].T)[upper] for s in range(len(fleet.keys))])
    assert np.abs(corr).mean() > 0.6
    assert not np.allclose(np.abs(corr), 1.0)  # correlated, not copies
    mean, std = v.mean(axis=1), v.std(axis=1)  # (S, F)
    assert (mean.max(axis=0) / mean.min(axis=0) > 1.5).all()
    assert (std.max(axis=0) / std.min(axis=0) > 1.5).all()


@pytest.mark.parametrize("name", ["fleet.csv", "fleet.csv.gz"])
def test_csv_round_trip(tmp_path: Path, name: str) -> None:
    fleet = generate_fleet(replace(SPEC, n_streams=3, n_steps=40, anomaly_rate=2.0))
    path = tmp_path / name
    fleet.write_csv(path)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header == ["machine", "ts", *fleet.features, "label"]
    keys, times, x, labels = fleet.events()
    assert [r[0] for r in rows] == list(keys)
    np.testing.assert_array_equal([float(r[1]) for r in rows], times)
    read = np.array([[float(v) for v in r[2:-1]] for r in rows]).astype(np.float32)
    np.testing.assert_array_equal(read, x)
    np.testing.assert_array_equal([r[-1] == "1" for r in rows], labels)
    if name.endswith(".gz"):
        with open(path, "rb") as fh:
            assert fh.read(2) == b"\x1f\x8b"


def test_csv_column_names_and_no_label(tmp_path: Path) -> None:
    fleet = generate_fleet(replace(SPEC, n_streams=2, n_steps=5))
    path = tmp_path / "f.csv"
    fleet.write_csv(path, key_col="sensor", time_col="t", label_col=None)
    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header == ["sensor", "t", *fleet.features]
    assert len(rows) == 10 and all(len(r) == len(header) for r in rows)


def test_csv_with_kind_labels_and_the_windows_file(tmp_path: Path) -> None:
    fleet = generate_fleet(replace(SPEC, n_streams=4, n_steps=300))
    assert len({a.kind for a in fleet.anomalies}) >= 3
    kinds = fleet.kind_labels()
    np.testing.assert_array_equal(kinds != "", fleet.labels)
    path = tmp_path / "k.csv"
    fleet.write_csv(path, label_kinds=True)
    with open(path, newline="") as fh:
        header, *rows = list(csv.reader(fh))
    assert header[-1] == "label"
    keys, times, _, labels = fleet.events()
    row_of = {k: i for i, k in enumerate(fleet.keys)}
    step = np.searchsorted(fleet.times, times)
    want = [kinds[row_of[k], t] or "0" for k, t in zip(keys, step, strict=True)]
    assert [r[-1] for r in rows] == want
    for a in fleet.anomalies:  # every step of an anomaly carries its kind
        inside = (keys == a.key) & (times >= a.start) & (times <= a.end)
        assert {r[-1] for r, m in zip(rows, inside, strict=True) if m} == {a.kind}
    # the windows file: what `streamlstm evaluate --labels` reads, kinds included
    wpath = tmp_path / "w.json"
    fleet.write_labels(wpath)
    windows, wkinds = load_labels(wpath)
    assert windows == fleet.windows()
    by_key = {k: sorted((a.start, a.kind) for a in fleet.anomalies if a.key == k) for k in windows}
    assert wkinds == {k: [kind for _, kind in v] for k, v in by_key.items()}


def check_events_consistent(fleet: Fleet, events: tuple[np.ndarray, ...]) -> None:
    keys, times, x, labels = events
    n = len(fleet.keys) * len(fleet.times)
    assert keys.dtype == object and times.dtype == np.float64
    assert x.dtype == np.float32 and labels.dtype == np.bool_
    assert keys.shape == times.shape == labels.shape == (n,) and x.shape == (n, len(fleet.features))
    sid = np.array([fleet.keys.index(k) for k in keys])
    tid = np.searchsorted(fleet.times, times)
    np.testing.assert_array_equal(fleet.times[tid], times)
    np.testing.assert_array_equal(fleet.values[sid, tid], x)
    np.testing.assert_array_equal(fleet.labels[sid, tid], labels)
    assert len(set(zip(sid.tolist(), tid.tolist(), strict=True))) == n  # each event once


def test_events_time_order() -> None:
    fleet = generate_fleet(replace(SPEC, n_steps=50))
    events = fleet.events()
    check_events_consistent(fleet, events)
    keys, times, _, _ = events
    order = np.lexsort((keys.astype(str), times))
    np.testing.assert_array_equal(order, np.arange(len(keys)))


def test_events_shuffled_within_time() -> None:
    fleet = generate_fleet(replace(SPEC, n_steps=50))
    events = fleet.events("shuffled_within_time")
    check_events_consistent(fleet, events)
    keys, times, _, _ = events
    assert (np.diff(times) >= 0).all()
    assert list(keys) != list(fleet.events()[0]), "some timestamp should be reordered"
    again = fleet.events("shuffled_within_time")
    np.testing.assert_array_equal(again[0], keys)


def test_events_stream_order_and_bad_order() -> None:
    fleet = generate_fleet(replace(SPEC, n_steps=20))
    events = fleet.events("stream")
    check_events_consistent(fleet, events)
    assert list(events[0][:20]) == [fleet.keys[0]] * 20
    with pytest.raises(ValueError, match="order"):
        fleet.events("random")


def test_stream_events_reproduce_the_clean_fleet() -> None:
    spec = clean(replace(SPEC, n_steps=300))  # more than one block of clean signal
    fleet = generate_fleet(spec)
    batches = list(stream_events(spec, n_steps=spec.n_steps))
    assert len(batches) == spec.n_steps
    keys, times, x, labels = batches[0]
    assert list(keys) == fleet.keys and x.shape == (spec.n_streams, len(spec.features))
    assert x.dtype == np.float32 and times.dtype == np.float64 and labels.dtype == np.bool_
    np.testing.assert_array_equal(np.stack([b[2] for b in batches], axis=1), fleet.values)
    np.testing.assert_array_equal([b[1][0] for b in batches], fleet.times)
    assert not any(b[3].any() for b in batches)


def test_stream_events_inject_labelled_anomalies_deterministically() -> None:
    spec = replace(SPEC, n_steps=200, anomaly_rate=2.0)
    steps = 2 * spec.n_steps  # runs past spec.n_steps: the stream is endless
    seen: list[Anomaly] = []
    batches = list(stream_events(spec, n_steps=steps, on_anomaly=seen.append))
    x = np.stack([b[2] for b in batches], axis=1)
    labels = np.stack([b[3] for b in batches], axis=1)
    times = np.array([b[1][0] for b in batches])

    base = generate_fleet(replace(clean(spec), n_steps=steps))
    np.testing.assert_array_equal(x[~labels], base.values[~labels])
    assert seen and labels.any() and (x[labels.nonzero()] != base.values[labels.nonzero()]).any()
    as_fleet = Fleet(base.keys, times, x, labels, seen, spec.features)
    expected = np.zeros_like(labels)
    for a in seen:
        expected[as_fleet.keys.index(a.key), window(as_fleet, a)] = True
    np.testing.assert_array_equal(labels, expected)

    again: list[Anomaly] = []
    x2 = np.stack([b[2] for b in stream_events(spec, n_steps=steps, on_anomaly=again.append)], 1)
    np.testing.assert_array_equal(x2, x)
    assert again == seen


@pytest.mark.parametrize(
    "bad",
    [
        {"n_streams": 0},
        {"n_steps": 0},
        {"period_s": 0.0},
        {"features": ()},
        {"features": ("a", "a")},
        {"noise": -1.0},
        {"anomaly_rate": -0.5},
        {"kinds": ("spike", "meltdown")},
        {"kinds": ()},
        {"min_len": 0},
        {"min_len": 10, "max_len": 5},
        {"features": ("temp",), "kinds": ("correlation_break",)},
    ],
)
def test_spec_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="FleetSpec"):
        FleetSpec(**bad)  # type: ignore[arg-type]


def test_single_channel_fleet_skips_correlation_break() -> None:
    fleet = generate_fleet(replace(SPEC, features=("flow",), anomaly_rate=5.0))
    assert fleet.anomalies and "correlation_break" not in {a.kind for a in fleet.anomalies}
    FleetSpec(features=("x",), kinds=("correlation_break",), anomaly_rate=0.0)  # clean is fine


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_streams=st.integers(1, 5),
    n_steps=st.integers(1, 300),
    rate=st.floats(0.0, 8.0),
    kinds=st.sets(st.sampled_from(ALL_KINDS), min_size=1).map(tuple),
    lengths=st.tuples(st.integers(1, 40), st.integers(0, 40)),
)
def test_anomalies_only_touch_their_windows(
    seed: int,
    n_streams: int,
    n_steps: int,
    rate: float,
    kinds: tuple[str, ...],
    lengths: tuple[int, int],
) -> None:
    min_len, extra = lengths
    spec = FleetSpec(
        n_streams=n_streams,
        n_steps=n_steps,
        anomaly_rate=rate,
        kinds=kinds,
        min_len=min_len,
        max_len=min_len + extra,
        seed=seed,
    )
    fleet, base = generate_fleet(spec), generate_fleet(clean(spec))
    outside = ~fleet.labels
    np.testing.assert_array_equal(fleet.values[outside], base.values[outside])
    lengths_seen = [window(fleet, a).stop - window(fleet, a).start for a in fleet.anomalies]
    assert fleet.labels.sum() == sum(lengths_seen)
    assert np.isfinite(fleet.values).all()
