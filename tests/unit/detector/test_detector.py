"""Detector contract: batching and interleaving change nothing, snapshots round-trip,
the scorer and alert machine match the plain-Python reference, bad input is counted."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlstm.detector import Detector, DetectorConfig, alert_id
from streamlstm.errors import InputError, ModelError
from streamlstm.kernels import detect as K
from streamlstm.kernels import layout as KL
from streamlstm.model import Model
from streamlstm.state import snapshot_from_bytes, snapshot_to_bytes
from tests import naive
from tests.conftest import SEED

FEATS = ["a", "b", "c"]
MODEL = Model.random(FEATS, hidden=8, layers=2, cell="lstm", seed=SEED)
GRU = Model.random(FEATS, hidden=8, layers=1, cell="gru", seed=SEED)
CFG = DetectorConfig(scorer="forecast", warmup=5, open_threshold=0.99, close_threshold=0.9,
                     min_run=2, close_run=2, cooldown_s=3.0, smooth=2)  # fmt: skip
# The regime scorer learns a normal from 256 events per stream: longer streams.
RCFG = DetectorConfig(warmup=5, min_run=1, close_run=2, cooldown_s=3.0)
FC = {"scorer": "forecast"}  # the forecast scorer's own behaviour


def make_events(
    rng: np.random.Generator, n_streams: int, n: int, spikes: bool = True, shifts: bool = False
):
    owner = rng.integers(0, n_streams, size=n)
    keys = [f"k{s}" for s in owner]
    counts = np.zeros(n_streams, np.int64)
    times = np.empty(n)
    rank = np.empty(n, np.int64)
    for i, s in enumerate(owner):
        times[i] = counts[s] * 10.0
        rank[i] = counts[s]
        counts[s] += 1
    x = rng.normal(size=(n, len(FEATS)))
    if spikes:
        x[rng.random(n) < 0.05] *= 40.0
    if shifts:  # after the regime scorer's baseline: a level shift, a stuck run, spikes
        x[(owner == 0) & (rank >= 400) & (rank < 480), 0] += 8.0
        stuck = (owner == 1) & (rank >= 500) & (rank < 540)
        x[stuck, 1] = 0.25
        x[(rank >= 300) & (rng.random(n) < 0.004)] *= 30.0
    return keys, times, x


def run_batches(det: Detector, keys, times, x, cuts) -> dict[str, np.ndarray]:
    out = {"outcome": [], "score": [], "alert": [], "transition": [], "forecast": []}
    ids = []
    bounds = [0, *sorted(set(cuts)), len(keys)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a == b:
            continue
        res = det.process_many(keys[a:b], times[a:b], x[a:b])
        for name in out:
            out[name].append(getattr(res, name))
        ids += [(t.alert_id, t.kind) for t in res.transitions]
    merged = {name: np.concatenate(v) for name, v in out.items()}
    merged["ids"] = ids  # type: ignore[assignment]
    return merged


def assert_same(a: dict, b: dict) -> None:
    for name in ("outcome", "score", "alert", "transition", "forecast"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # NaN == NaN, bit for bit
    assert a["ids"] == b["ids"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), cuts=st.lists(st.integers(0, 300), max_size=12))
def test_batched_equals_per_event(seed, cuts):
    rng = np.random.default_rng(seed)
    keys, times, x = make_events(rng, 6, 300)
    batched = run_batches(Detector(MODEL, CFG), keys, times, x, cuts)
    one_by_one = run_batches(Detector(MODEL, CFG), keys, times, x, range(1, 300))
    assert_same(batched, one_by_one)
    assert batched["transition"].any(), f"no alert transitions exercised (seed {seed})"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), model=st.sampled_from([MODEL, GRU]))
def test_interleaving_changes_nothing(seed, model):
    _interleaving_changes_nothing(seed, model, CFG, 4, 240)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), cuts=st.lists(st.integers(0, 2400), max_size=12))
def test_batched_equals_per_event_regime(seed, cuts):
    rng = np.random.default_rng(seed)
    keys, times, x = make_events(rng, 3, 2400, spikes=False, shifts=True)
    batched = run_batches(Detector(MODEL, RCFG), keys, times, x, cuts)
    one_by_one = run_batches(Detector(MODEL, RCFG), keys, times, x, range(1, 2400))
    assert_same(batched, one_by_one)
    assert batched["transition"].any(), f"no alert transitions exercised (seed {seed})"


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), model=st.sampled_from([MODEL, GRU]))
def test_interleaving_changes_nothing_regime(seed, model):
    _interleaving_changes_nothing(seed, model, RCFG, 3, 2000, shifts=True)


def _interleaving_changes_nothing(seed, model, cfg, n_streams, n, shifts=False):
    """Each stream gets the same results (and alert ids) as when it runs alone."""
    rng = np.random.default_rng(seed)
    keys, times, x = make_events(rng, n_streams, n, spikes=not shifts, shifts=shifts)
    together = Detector(model, cfg)
    res = together.process_many(keys, times, x)
    karr = np.array(keys)
    for key in set(keys):
        m = karr == key
        alone = Detector(model, cfg).process_many(list(karr[m]), times[m], x[m])
        for name in ("outcome", "score", "hold", "alert", "transition", "forecast"):
            np.testing.assert_array_equal(getattr(res, name)[m], getattr(alone, name), err_msg=name)
        assert [t.alert_id for t in res.transitions if t.key == key] == [
            t.alert_id for t in alone.transitions
        ]


def _openings(res, offset: int = 0) -> list[tuple]:
    return [(t.key, t.index + offset, t.contributions, t.views)
            for t in res.transitions if t.kind == "opened"]  # fmt: skip


def test_an_alert_opened_by_a_run_names_the_same_however_the_run_is_cut():
    # min_run 2: the opening names the run's first event (layout.ss_pk rows), so where a
    # batch or a checkpoint cuts the run changes nothing, and the names differ from the
    # opening event's own parts (else this test would not exercise the rows)
    rng = np.random.default_rng(SEED)
    keys, times, x = make_events(rng, 3, 2400, spikes=False, shifts=True)
    cfg = DetectorConfig(warmup=5, min_run=2, close_run=2, cooldown_s=3.0)
    whole = Detector(MODEL, cfg).process_many(keys, times, x)
    want = _openings(whole)
    assert len(want) >= 3
    one = Detector(MODEL, cfg)
    got = []
    for i in range(len(keys)):
        got += _openings(one.process_many(keys[i : i + 1], times[i : i + 1], x[i : i + 1]), i)
    assert got == want
    # a checkpoint between each run's first event and the event that opens the alert;
    # without the rows (an older checkpoint's zeros) an opening names its own event
    own = 0
    for _, i_open, _, _ in want:
        det = Detector(MODEL, cfg)
        det.process_many(keys[:i_open], times[:i_open], x[:i_open])
        snap = snapshot_to_bytes(det.table.snapshot(group=0))
        fresh = Detector(MODEL, cfg)
        fresh.table.restore(snapshot_from_bytes(snap))
        rest = _openings(fresh.process_many(keys[i_open:], times[i_open:], x[i_open:]), i_open)
        assert rest == [w for w in want if w[1] >= i_open]
        wiped = Detector(MODEL, cfg)
        wiped.table.restore(snapshot_from_bytes(snap))
        i_pk = KL.ss_pk(len(FEATS))
        wiped.table.arrays["sstat"][:, i_pk : i_pk + KL.N_PK, :] = 0.0
        mine = _openings(wiped.process_many(keys[i_open:i_open + 1], times[i_open:i_open + 1],
                                            x[i_open:i_open + 1]), i_open)  # fmt: skip
        own += mine != [w for w in want if w[1] == i_open]
    assert own >= 1, "no opening's names came from its run's first event"


@pytest.mark.parametrize(
    "cfg,n,delta",
    [(CFG, 600, False), (RCFG, 3000, False), (RCFG, 1000, True)],
    ids=["forecast", "regime", "changes"],
)
def test_snapshot_restore_continue_equals_continue(cfg, n, delta):
    # (a model of changes keeps each stream's last value in its state too)
    model = replace(MODEL, delta=True) if delta else MODEL
    rng = np.random.default_rng(SEED)
    keys, times, x = make_events(rng, 4 if n > 1000 else 10, n, spikes=n < 1000, shifts=n > 1000)
    det = Detector(model, cfg)
    g = np.array([int(k[1:]) % 2 for k in keys])
    karr = np.array(keys)
    for part in (0, 1):
        m = (g == part) & (np.arange(n) < n // 2)
        det.process_many(list(karr[m]), times[m], x[m], group=part)
    # snapshot each partition separately, through bytes, into a fresh detector
    fresh = Detector(model, cfg)
    for part in (0, 1):
        fresh.table.restore(snapshot_from_bytes(snapshot_to_bytes(det.table.snapshot(group=part))))
    assert sorted(fresh.table.keys()) == sorted(det.table.keys())
    for part in (0, 1):
        m = (g == part) & (np.arange(n) >= n // 2)
        a = det.process_many(list(karr[m]), times[m], x[m], group=part)
        b = fresh.process_many(list(karr[m]), times[m], x[m], group=part)
        for name in ("outcome", "score", "hold", "alert", "transition", "forecast"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for key in det.table.keys():
        for name, arr in det.stream_state(key).items():
            np.testing.assert_array_equal(arr, fresh.stream_state(key)[name], err_msg=name)


def test_snapshot_of_one_group_only():
    det = Detector(MODEL, CFG)
    det.process_many(["x", "y"], [0.0, 0.0], np.ones((2, 3)), group=0)
    det.process_many(["z"], [0.0], np.ones((1, 3)), group=7)
    snap = det.table.snapshot(group=7)
    other = Detector(MODEL, CFG)
    assert other.table.restore(snap) == ["z"]
    assert int(other.table.group[other.table.slot("z")]) == 7
    det.table.drop(group=7)
    assert sorted(det.table.keys()) == ["x", "y"]


@pytest.mark.parametrize("stream_scale", [True, False])
def test_scorer_and_alerts_match_reference(stream_scale):
    rng = np.random.default_rng(SEED)
    n = 400
    x = rng.normal(size=(n, 3)) * 0.3
    x[150:160] += 6.0  # an incident
    x[300, 1] = np.nan  # a missing feature is imputed and left out of the score
    times = np.arange(n) * 60.0
    # stream_scale scores u / (1 + u) of the error's ratio u to the recent maximum
    # (0.8: u >= 4); without it the score is a chi-square tail probability.
    open_thr, close_thr = (0.8, 0.6) if stream_scale else (0.995, 0.95)
    cfg = DetectorConfig(scorer="forecast", warmup=20, open_threshold=open_thr,
                         close_threshold=close_thr,
                         min_run=2, close_run=3, cooldown_s=600.0, stream_scale=stream_scale,
                         smooth=3, scale_window=50)  # fmt: skip
    model = MODEL.with_calibration(np.array([0.5, 1.0, 2.0]), None)
    det = Detector(model, cfg)
    res = det.process_many(["m"] * n, times, x)
    ref = naive.NaiveScorer(model.resid_scale, cfg.open_threshold, cfg.close_threshold,
                            cfg.min_run, cfg.close_run, cfg.cooldown_s, cfg.warmup,
                            stream_scale, cfg.scale_window, cfg.smooth, cfg.min_scale,
                            cfg.learn_ratio)  # fmt: skip
    xn = model.normalise(x)
    kinds = []
    for i in range(n):
        fc = None if i == 0 else res.forecast[i]
        score, trans = ref.step(times[i], xn[i], fc)
        if math.isnan(score):
            assert np.isnan(res.score[i])
        else:
            assert res.score[i] == pytest.approx(score, abs=1e-5), i
        assert bool(res.alert[i]) == ref.in_alert, i
        if trans:
            kinds.append((i, trans))
    assert [(t.index, t.kind) for t in res.transitions] == kinds
    assert kinds and kinds[0][1] == "opened" and 150 <= kinds[0][0] <= 152
    assert res.outcome[300] == K.IMPUTED


def test_transition_carries_id_contributions_and_forecast():
    n = 120
    x = np.zeros((n, 3))
    x[100, 2] = 50.0  # only feature c is off
    det = Detector(MODEL, DetectorConfig(warmup=10, min_run=1, **FC))
    res = det.process_many(["pump"] * n, np.arange(n) * 1.0, x, refs=np.arange(n) + 1000)
    opened = [t for t in res.transitions if t.kind == "opened"]
    assert opened, "a 50-sigma spike must open an alert"
    t = opened[0]
    assert t.index == 100 and t.ref == 1100
    assert t.alert_id == alert_id("pump", 0, 1100)
    assert t.contributions[0][0] == "c" and t.contributions[0][1] > 0.9
    assert t.values["c"] == 50.0 and set(t.forecast) == set(FEATS)


def test_warmup_blocks_alerts_and_cooldown_delays_reopening():
    n = 200
    x = np.zeros((n, 3))
    x[3] = 80.0  # inside warm-up: scored but never alerts
    x[60] = 80.0
    x[70] = 80.0  # within the cooldown after the first alert closed
    x[150] = 80.0
    cfg = DetectorConfig(warmup=20, min_run=1, close_run=1, cooldown_s=30.0, **FC)
    res = Detector(MODEL, cfg).process_many(["s"] * n, np.arange(n) * 1.0, x)
    opened = [t.index for t in res.transitions if t.kind == "opened"]
    assert 3 not in opened and 60 in opened and 70 not in opened and 150 in opened


def test_bad_input_is_counted_not_fatal():
    det = Detector(MODEL, CFG)
    good = np.zeros((1, 3))
    det.process_many(["s"], [100.0], good)
    x = np.array([[0, 0, 0], [np.inf, 0, 0], [np.nan] * 3, [1e12, 0, 0], [0, np.nan, 0], [0, 0, 0]])
    times = np.array([50.0, 101.0, 102.0, 103.0, 104.0, np.nan])
    res = det.process_many(["s"] * 6, times, x)
    names = [K.OUTCOME_NAMES[o] for o in res.outcome]
    assert names == ["too_old", "non_finite", "missing", "out_of_range", "imputed", "non_finite"]
    assert det.outcome_counts()["ok"] == 1 and det.outcome_counts()["too_old"] == 1
    assert det.stream_state("s")["istat"][K.I_EVENTS] == 2  # only the good ones advanced
    assert det.stream_state("s")["fstat"][K.F_LAST_T] == 104.0


def test_equal_times_are_not_too_old():
    det = Detector(MODEL, CFG)
    res = det.process_many(["s", "s"], [5.0, 5.0], np.zeros((2, 3)))
    assert res.outcome.tolist() == [K.OK, K.OK]


def test_reset_gap_restarts_the_stream_and_decay_shrinks_state():
    x = np.ones((3, 3))
    det = Detector(MODEL, DetectorConfig(reset_gap_s=100.0))
    det.process_many(["s", "s"], [0.0, 10.0], x[:2])
    res = det.process_many(["s"], [500.0], x[2:])
    assert np.isnan(res.score[0]) and np.isnan(res.forecast[0]).all()
    # the state after the reset equals a brand-new stream's after the same event
    np.testing.assert_array_equal(det.stream_state("s")["h"], _state_after(x[2:]))
    assert det.stream_state("s")["istat"][K.I_EVENTS] == 1

    decayed = Detector(MODEL, DetectorConfig(decay_tau_s=10.0))
    plain = Detector(MODEL)
    for d in (decayed, plain):
        d.process_many(["s"], [0.0], x[:1])
    h0 = plain.stream_state("s")["h"].copy()
    np.testing.assert_array_equal(decayed.stream_state("s")["h"], h0)
    # After a gap of 1000 s with tau 10 s the old state is gone: same as a fresh stream.
    decayed.process_many(["s"], [1000.0], x[:1])
    zero_start = Detector(MODEL)
    zero_start.process_many(["s"], [0.0], x[:1])
    np.testing.assert_allclose(decayed.stream_state("s")["h"], zero_start.stream_state("s")["h"],
                               atol=1e-6)  # fmt: skip


def _state_after(x: np.ndarray) -> np.ndarray:
    det = Detector(MODEL)
    det.process_many(["s"], [0.0], x)
    return det.stream_state("s")["h"]


def test_input_shape_errors_are_clear():
    det = Detector(MODEL)
    with pytest.raises(InputError, match=r"expected \(2, 3\) for features a, b, c"):
        det.process_many(["a", "b"], [0.0, 1.0], np.zeros((2, 2)))
    with pytest.raises(InputError, match="times have shape"):
        det.process_many(["a"], [0.0, 1.0], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="close_threshold 0.99 is above open_threshold 0.9"):
        DetectorConfig(open_threshold=0.9, close_threshold=0.99)


def test_datetime_times_are_seconds():
    det = Detector(MODEL)
    t = np.array(["2024-01-01T00:00:00", "2024-01-01T00:01:00"], dtype="datetime64[s]")
    det.process_many(["s", "s"], t, np.zeros((2, 3)))
    assert det.stream_state("s")["fstat"][K.F_LAST_T] == 1704067260.0


def test_reload_model_keeps_state_or_refuses():
    det = Detector(MODEL, CFG)
    det.process_many(["s"], [0.0], np.ones((1, 3)))
    h = det.stream_state("s")["h"].copy()
    det.reload_model(Model.random(FEATS, hidden=8, layers=2, seed=99))
    np.testing.assert_array_equal(det.stream_state("s")["h"], h)
    with pytest.raises(ModelError, match="does not fit the state"):
        det.reload_model(Model.random(FEATS, hidden=16, layers=2))


def test_streams_in_alert_lists_open_alerts():
    x = np.zeros((40, 3))
    x[30:] = 100.0
    det = Detector(MODEL, DetectorConfig(warmup=5, close_run=50, **FC))
    res = det.process_many(["hot"] * 40 + ["cold"] * 40,
                           np.r_[np.arange(40), np.arange(40)] * 1.0,
                           np.r_[x, np.zeros((40, 3))], refs=np.arange(80))  # fmt: skip
    assert [k for k, *_ in det.streams_in_alert()] == ["hot"]
    # since when: the open alert names the event that opened it, as its transition did
    (opened,) = [t for t in res.transitions if t.kind == "opened"]
    (a,) = det.open_alerts()
    assert (a.key, a.alert_id, a.opened_ref) == ("hot", opened.alert_id, opened.ref)
    assert a.last_time == 39.0


def test_top_features_of_an_open_alert_survive_a_snapshot():
    x = np.zeros((40, 3))
    x[30:, 1] = 100.0  # only feature b goes wild
    det = Detector(MODEL, DetectorConfig(warmup=5, close_run=50, **FC))
    det.process_many(["hot"] * 40, np.arange(40) * 1.0, x)
    ((key, group, peak, feats),) = det.streams_in_alert()
    assert (key, group, feats) == ("hot", 0, "b") and peak > 0.9
    other = Detector(MODEL, DetectorConfig(warmup=5, close_run=50, **FC))
    other.table.restore(det.table.snapshot())
    assert other.streams_in_alert() == det.streams_in_alert()


def test_a_batch_with_more_streams_than_the_cap_runs_in_chunks_of_the_cap():
    """Issue #10: state.max_streams 1000 with max_poll_records 2000 and 5k keys made
    every daemon start exit with OverflowError. Now the batch runs as consecutive chunks
    of max_streams events, exactly as if the caller had cut it there, evicting the least
    recently seen streams to stay under the cap."""
    rng = np.random.default_rng(SEED)
    keys, times, x = make_events(rng, 30, 1200)
    cfg = DetectorConfig(**{**CFG.as_dict(), "max_streams": 25})
    det = Detector(MODEL, cfg)
    res = det.process_many(keys, times, x)
    assert len(det.table) <= 25 and det.table.evicted_lru > 0
    cut = run_batches(Detector(MODEL, cfg), keys, times, x, range(25, 1200, 25))
    assert_same({**{n: getattr(res, n) for n in cut if n != "ids"},
                 "ids": [(t.alert_id, t.kind) for t in res.transitions]}, cut)  # fmt: skip
    assert res.transitions, "no alert transitions exercised"
    # Transition indices point into the whole batch, not into a chunk.
    assert all(keys[t.index] == t.key and times[t.index] == t.time for t in res.transitions)
    assert max(t.index for t in res.transitions) >= 25


def test_a_long_batch_of_few_streams_is_not_cut():
    """More events than the cap but no more distinct streams: one batch, no eviction,
    the same as per-event processing."""
    rng = np.random.default_rng(SEED)
    keys, times, x = make_events(rng, 6, 300)
    cfg = DetectorConfig(**{**CFG.as_dict(), "max_streams": 6})
    det = Detector(MODEL, cfg)
    batched = run_batches(det, keys, times, x, [])
    assert det.table.evicted_lru == 0
    assert_same(batched, run_batches(Detector(MODEL, cfg), keys, times, x, range(1, 300)))
