"""Per-stream input normalisation (streamlstm.kernels.norm, DetectorConfig.stream_norm):
batching and snapshots change nothing, scale and offset of a stream do not matter,
missing values teach nothing, the plain-Python reference agrees, and the trainer
and the model file carry the setting to the detector."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlstm import model as M
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import CheckpointError, ModelError
from streamlstm.kernels import detect as K
from streamlstm.kernels import norm as KN
from streamlstm.model import Model
from streamlstm.state import snapshot_from_bytes, snapshot_to_bytes
from streamlstm.training.data import prepare
from streamlstm.training.trainer import TrainConfig, train_model
from tests import naive
from tests.conftest import SEED
from tests.unit.detector.test_detector import (
    FEATS,
    GRU,
    MODEL,
    assert_same,
    make_events,
    run_batches,
)

SCALE_RTOL = 1e-4  # float32 inputs at a 5e4 offset keep ~4e-6 of a unit of spread
REF_ATOL = 1e-4  # kernel (float32 state) against the float64 reference


def cfg(mode: str, **kw) -> DetectorConfig:
    base = {"scorer": "forecast", "warmup": 5, "open_threshold": 0.8, "close_threshold": 0.6,
            "min_run": 1,
            "close_run": 2, "cooldown_s": 3.0, "smooth": 2, "stream_norm": mode,
            "norm_window": 40}  # fmt: skip
    base.update(kw)
    return DetectorConfig(**base)


def scaled_events(rng: np.random.Generator, n_streams: int, n: int):
    """Streams at very different levels and scales, with spikes and missing values."""
    keys, times, x = make_events(rng, n_streams, n)
    owner = np.array([int(k[1:]) for k in keys])
    x = x * (10.0**owner)[:, None] + (1000.0 * owner)[:, None]
    x[rng.random(x.shape) < 0.03] = np.nan
    return keys, times, x


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    cuts=st.lists(st.integers(0, 300), max_size=12),
    mode=st.sampled_from(["warmup", "ewm"]),
    model=st.sampled_from([MODEL, GRU]),
)
def test_batched_equals_per_event(seed, cuts, mode, model):
    rng = np.random.default_rng(seed)
    keys, times, x = scaled_events(rng, 4, 300)
    c = cfg(mode)
    batched = run_batches(Detector(model, c), keys, times, x, cuts)
    one_by_one = run_batches(Detector(model, c), keys, times, x, range(1, 300))
    assert_same(batched, one_by_one)
    assert batched["transition"].any(), f"no alert transitions exercised (seed {seed})"


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_snapshot_restore_continues_identically(mode):
    rng = np.random.default_rng(SEED)
    keys, times, x = scaled_events(rng, 5, 600)
    det = Detector(MODEL, cfg(mode))
    det.process_many(keys[:300], times[:300], x[:300])
    fresh = Detector(MODEL, cfg(mode))
    fresh.table.restore(snapshot_from_bytes(snapshot_to_bytes(det.table.snapshot())))
    a = det.process_many(keys[300:], times[300:], x[300:])
    b = fresh.process_many(keys[300:], times[300:], x[300:])
    for name in ("outcome", "score", "alert", "transition", "forecast"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for key in det.table.keys():
        np.testing.assert_array_equal(det.stream_state(key)["nstat"],
                                      fresh.stream_state(key)["nstat"])  # fmt: skip


def test_snapshot_without_statistics_is_refused_clearly():
    snap = Detector(MODEL, cfg("off")).table.snapshot()
    with pytest.raises(CheckpointError, match="lacks state column.*nstat.*stream_norm"):
        Detector(MODEL, cfg("warmup")).table.restore(snap)


def _two_scales(mode: str, n: int = 500):
    rng = np.random.default_rng(SEED)
    x = np.cumsum(rng.normal(size=(n, 3)), axis=0) * 0.1 + rng.normal(size=(n, 3))
    x[350] += 8.0
    y = 1000.0 * x + 5e4
    t = np.arange(n) * 1.0
    det = Detector(MODEL, cfg(mode, warmup=10, norm_window=100))
    res = det.process_many(["x"] * n + ["y"] * n, np.r_[t, t], np.r_[x, y])
    return res, n


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_scale_and_offset_do_not_change_scores(mode):
    res, n = _two_scales(mode)
    sx, sy = res.score[:n], res.score[n:]
    np.testing.assert_allclose(sy, sx, rtol=SCALE_RTOL, atol=SCALE_RTOL)
    np.testing.assert_array_equal(res.alert[:n], res.alert[n:])
    assert res.alert[:n].any(), "the spike at 350 must alert"
    # the forecast is reported in raw units: the same forecast, scaled like the input
    fx, fy = res.forecast[:n].astype(np.float64), res.forecast[n:].astype(np.float64)
    np.testing.assert_allclose((fy - 5e4) / 1000.0, fx, atol=1e-3)


def test_without_stream_norm_scale_changes_scores():
    res, n = _two_scales("off")
    assert np.nanmax(np.abs(res.score[:n] - res.score[n:])) > 0.05


def test_missing_values_do_not_poison_the_statistics():
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(200, 3)) * 5.0 + 7.0
    x[rng.random(x.shape) < 0.2] = np.nan
    x[17] = np.nan  # an all-missing event is rejected and teaches nothing either
    for mode in ("warmup", "ewm"):
        det = Detector(MODEL, cfg(mode, norm_window=50))
        det.process_many(["s"] * 200, np.arange(200.0), x)
        ns = det.stream_state("s")["nstat"]
        assert np.all(np.isfinite(ns))
        ref = naive.NaiveStreamNorm(3, mode, 50)
        for row in MODEL.normalise(x):
            if not np.isnan(row).all():
                ref.step(row.astype(np.float64))
        present = np.sum(~np.isnan(x), axis=0)
        want = present if mode == "ewm" else np.minimum(present, 50)
        np.testing.assert_array_equal(ns[KN.NS_COUNT], want)
        np.testing.assert_allclose(ns[KN.NS_MEAN], ref.mean, rtol=1e-9)
        np.testing.assert_allclose(ns[KN.NS_VAR], ref.var, rtol=1e-7)


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_normalise_series_matches_reference(mode):
    rng = np.random.default_rng(SEED)
    z = (rng.standard_t(3, size=(400, 2)) * 3.0 + 50.0).astype(np.float32)
    z[100:130, 0] += 40.0  # an incident after the warm-up
    z[5, 1] = np.nan
    z[:, 1] = z[:, 1] * 0 + np.where(np.arange(400) < 80, 2.0, z[:, 1])  # constant at first
    got = KN.normalise_series(z, mode, 60)
    ref = naive.NaiveStreamNorm(2, mode, 60)
    want = np.array([ref.step(row) for row in z])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if mode == "warmup":  # constant during warm-up: left in model units, only centred
        np.testing.assert_allclose(got[80:, 1], z[80:, 1] - 2.0, rtol=1e-6)


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_detector_matches_reference(mode):
    """Scores and raw-unit forecasts against the numpy LSTM + scorer on z'."""
    n = 300
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(n, 3)) * [1.0, 30.0, 0.01] + [0.0, 500.0, -3.0]
    x[200:206] += [4.0, 120.0, 0.04]
    times = np.arange(n) * 60.0
    c = cfg(mode, warmup=20, min_run=2, close_run=3, cooldown_s=600.0, smooth=3,
            scale_window=50, norm_window=50)  # fmt: skip
    model = MODEL.with_calibration(np.array([0.5, 1.0, 2.0]), None)
    res = Detector(model, c).process_many(["m"] * n, times, x)
    norm = naive.NaiveStreamNorm(3, mode, 50)
    z = model.normalise(x)
    zs, sds, means, scales = [], [], [], []
    for row in z:
        zs.append(norm.step(row))
        sds.append([norm.sd(f) for f in range(3)])
        scales.append([norm.scale(f) for f in range(3)])
        means.append(norm.mean.copy())
    zs_a, sds_a, means_a, scales_a = map(np.array, (zs, sds, means, scales))
    # forecasts in the units of the statistics before each event (the scale after
    # it while a feature has not varied), back to model units, then re-standardised
    fc_ref, _, _ = naive.run_stream(model, zs_a)
    conv = np.where(scales_a[:-1] > 0, scales_a[:-1], sds_a[1:])
    fc_model = np.full_like(fc_ref, np.nan)
    fc_model[1:] = fc_ref[1:] * conv + means_a[:-1]
    fc_scored = (fc_model - means_a) / sds_a
    spread = np.array([1.0, 30.0, 0.01])  # forecasts are in raw units
    err = (res.forecast[1:] - model.denormalise(fc_model[1:])) / spread
    assert np.max(np.abs(err)) < 1e-3
    scorer = naive.NaiveScorer(model.resid_scale, c.open_threshold, c.close_threshold,
                               c.min_run, c.close_run, c.cooldown_s, c.warmup, True,
                               c.scale_window, c.smooth, c.min_scale, c.learn_ratio)  # fmt: skip
    kinds = []
    for i in range(n):
        score, trans = scorer.step(times[i], zs_a[i], None if i == 0 else fc_scored[i])
        if math.isnan(score):
            assert np.isnan(res.score[i])
        else:
            assert res.score[i] == pytest.approx(score, abs=REF_ATOL), i
        if trans:
            kinds.append((i, trans))
    assert [(t.index, t.kind) for t in res.transitions] == kinds
    assert kinds and kinds[0][1] == "opened" and 200 <= kinds[0][0] <= 203
    opened = res.transitions[0]
    assert sum(s for _, s in opened.contributions) == pytest.approx(1.0)


def test_reset_gap_forgets_the_statistics():
    x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 9.0], [50.0, 60.0, 70.0]])
    det = Detector(MODEL, cfg("warmup", reset_gap_s=100.0))
    det.process_many(["s"] * 3, [0.0, 1.0, 500.0], x)
    new = Detector(MODEL, cfg("warmup"))
    new.process_many(["s"], [0.0], x[2:])
    np.testing.assert_array_equal(det.stream_state("s")["nstat"], new.stream_state("s")["nstat"])
    np.testing.assert_array_equal(det.stream_state("s")["h"], new.stream_state("s")["h"])


def test_model_file_records_it_and_the_detector_follows(tmp_path, caplog):
    m = MODEL.with_stream_norm("ewm", 77)
    loaded = M.load(m.save(tmp_path / "m.npz"))
    assert (loaded.stream_norm, loaded.norm_window) == ("ewm", 77)
    det = Detector(loaded)
    assert (det.stream_norm, det.norm_window) == ("ewm", 77)
    assert "nstat" in det.table.arrays
    assert not caplog.records
    assert Detector(loaded, DetectorConfig(stream_norm="off")).stream_norm == "off"
    assert "trained with stream_norm 'ewm' and runs with 'off'" in caplog.text
    assert Detector(loaded, DetectorConfig(norm_window=9)).norm_window == 9
    assert Detector(MODEL, DetectorConfig(stream_norm="warmup")).norm_window == KN.DEFAULT_WINDOW
    # files written before the field existed read as "off"
    meta = MODEL.meta()
    del meta["stream_norm"]
    old = M.from_meta(meta, MODEL.arrays(), "old.npz")
    assert old.stream_norm == "off" and "nstat" not in Detector(old).table.arrays
    with pytest.raises(ModelError, match="stream_norm"):
        MODEL.with_stream_norm("sometimes", 5)
    with pytest.raises(ValueError, match="stream_norm is 'x'"):
        DetectorConfig(stream_norm="x")


def test_reload_refuses_another_normalisation():
    det = Detector(MODEL.with_stream_norm("warmup", 50))
    det.process_many(["s"], [0.0], np.ones((1, 3)))
    det.reload_model(MODEL.with_stream_norm("warmup", 50))  # same: fine
    with pytest.raises(ModelError, match="per-stream normalisation"):
        det.reload_model(MODEL)


def test_trainer_sees_what_the_detector_computes():
    rng = np.random.default_rng(SEED)
    n = 400
    keys = np.array(["a"] * n + ["b"] * n, dtype=object)
    times = np.r_[np.arange(n), np.arange(n)] * 1.0
    base = np.sin(np.arange(n) / 7.0)[:, None] + 0.1 * rng.normal(size=(n, 2))
    # Trained together: the model's own normalisation is the fleet's, and stream a
    # spans 1/20 of it. (Far wider apart and a small stream spans too few float32
    # steps of the model-normalised value to be standardised exactly.)
    x = np.r_[base, 20.0 * base + 300.0]
    x[[3, n + 3], 1] = np.nan
    data = prepare(keys, times, x, ("u", "v"), 0.2, False, stream_norm=("warmup", 64))
    model = Model.random(["u", "v"]).with_normalisation(data.norm_mean, data.norm_std)
    for s in data.streams:
        want = KN.normalise_series(model.normalise(s.x), "warmup", 64)
        np.testing.assert_allclose(s.xn, want, atol=2e-5)
    a, b = data.streams
    np.testing.assert_allclose(a.xn, b.xn, atol=2e-3)  # two scales, one input

    tc = TrainConfig(hidden=4, window=16, batch=4, epochs=2, progress=False,
                     stream_norm="warmup", norm_window=64)  # fmt: skip
    model, _ = train_model(keys, times, x, ("u", "v"), tc)
    assert (model.stream_norm, model.norm_window) == ("warmup", 64)
    det = Detector(model)
    assert det.stream_norm == "warmup"
    res = det.process_many(list(keys), times, x)
    np.testing.assert_allclose(res.score[:n], res.score[n:], atol=1e-3)
    assert res.counts()["ok"] + res.counts()["imputed"] == 2 * n
    # fine-tuning keeps the model's own setting
    tuned, _ = train_model(keys, times, x, ("u", "v"), TrainConfig(
        hidden=4, window=16, batch=4, epochs=1, progress=False), init=model)  # fmt: skip
    assert (tuned.stream_norm, tuned.norm_window) == ("warmup", 64)


def test_yaml_scoring_section_sets_it():
    import yaml

    from streamlstm.service.config import parse_config
    from tests.unit.service.test_config import REPO

    data = yaml.safe_load((REPO / "config" / "pipeline.yaml").read_text())
    data["pipelines"][0].setdefault("scoring", {})
    data["pipelines"][0]["scoring"] = {"stream_norm": "warmup", "norm_window": 300}
    got = parse_config(data, source="p.yaml", base_dir=REPO / "config", env={})
    d = got.pipelines[0].detector
    assert (d.stream_norm, d.norm_window) == ("warmup", 300)
    data["pipelines"][0]["scoring"] = {"stream_norm": "sometimes"}
    with pytest.raises(Exception, match=r"scoring\.stream_norm.*sometimes"):
        parse_config(data, source="p.yaml", base_dir=REPO / "config", env={})


def test_outcome_codes_unchanged_by_stream_norm():
    x = np.array([[0, 0, 0], [np.inf, 0, 0], [np.nan] * 3, [1e12, 0, 0], [0, np.nan, 0.0]])
    res = Detector(MODEL, cfg("warmup")).process_many(["s"] * 5, np.arange(5.0), x)
    names = [K.OUTCOME_NAMES[o] for o in res.outcome]
    assert names == ["ok", "non_finite", "missing", "out_of_range", "imputed"]


def test_fine_tuning_on_recent_events_continues_the_detectors_statistics():
    """History that starts mid-stream is normalised from the detector's statistics."""
    rng = np.random.default_rng(SEED)
    n = 500
    x = np.cumsum(rng.normal(size=(n, 3)), axis=0) + [5.0, -50.0, 500.0]
    model = MODEL.with_stream_norm("warmup", 64)
    det = Detector(model)
    det.process_many(["s"] * 300, np.arange(300.0), x[:300])
    stats = {"s": det.stream_state("s")["nstat"]}
    data = prepare(["s"] * 200, np.arange(300.0, 500.0), x[300:], FEATS, 0.0, False,
                   (model.norm_mean, model.norm_std, 0.0, 1.0), ("warmup", 64),
                   stream_stats=stats)  # fmt: skip
    want = model.stream_inputs(x)[300:]  # what the detector feeds the model for them
    np.testing.assert_array_equal(data.streams[0].xn, want)
    np.testing.assert_array_equal(data.stream_stats["s"], stats["s"])
    fresh = prepare(["s"] * 200, np.arange(300.0, 500.0), x[300:], FEATS, 0.0, False,
                    (model.norm_mean, model.norm_std, 0.0, 1.0), ("warmup", 64))  # fmt: skip
    assert np.abs(fresh.streams[0].xn - want).max() > 0.1


def test_online_learner_refits_with_stream_norm():
    from streamlstm.training.online import OnlineLearner

    rng = np.random.default_rng(SEED)
    n = 600
    keys = ["a"] * n + ["b"] * n
    times = np.r_[np.arange(n), np.arange(n)] * 1.0
    base = np.sin(np.arange(n) / 9.0)[:, None] + 0.1 * rng.normal(size=(n, 3))
    x = np.r_[base, 100.0 * base + 1e4]
    order = np.argsort(times, kind="stable")
    tc = TrainConfig(hidden=4, window=16, batch=4, epochs=2, progress=False,
                     stream_norm="warmup", norm_window=64)  # fmt: skip
    ol = OnlineLearner(FEATS, tc, learn_first=100, refit_every=400, buffer=150)
    ol.process_many([keys[i] for i in order], times[order], x[order])
    assert ol.fits >= 2 and ol.model is not None and ol.model.stream_norm == "warmup"
    assert ol.detector is not None and ol.detector.stream_norm == "warmup"


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_last_value_forecast_is_the_last_value_while_statistics_are_learnt(mode):
    """The forecast is read in the units it was made in: changing statistics are no error."""
    from streamlstm.model.baselines import last_value_model

    rng = np.random.default_rng(SEED)
    x = np.cumsum(rng.normal(size=(120, 3)), axis=0) * [1.0, 10.0, 0.1] + [0.0, 100.0, -5.0]
    model = last_value_model(FEATS).with_stream_norm(mode, 64)
    res = Detector(model).process_many(["s"] * 120, np.arange(120.0), x)
    np.testing.assert_allclose(res.forecast[1:], x[:-1], rtol=1e-4, atol=1e-4 * 10)


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_training_targets_are_read_as_the_detector_reads_forecasts(mode):
    rng = np.random.default_rng(SEED)
    z = (rng.normal(size=(200, 2)) * 3.0 + 10.0).astype(np.float32)
    z[7, 0] = np.nan
    zs, y = KN.normalise_series_targets(z, mode, 50)
    np.testing.assert_array_equal(zs, KN.normalise_series(z, mode, 50))
    ref = naive.NaiveStreamNorm(2, mode, 50)
    prev_mean, prev_scale = ref.mean.copy(), [0.0, 0.0]
    for t in range(200):
        ref.step(z[t])
        if t > 0:
            for f in range(2):
                if np.isnan(z[t, f]):
                    assert np.isnan(y[t - 1, f])
                    continue
                sc = prev_scale[f] or ref.sd(f)
                assert y[t - 1, f] == pytest.approx((z[t, f] - prev_mean[f]) / sc, rel=1e-5)
        prev_mean, prev_scale = ref.mean.copy(), [ref.scale(f) for f in range(2)]
    assert np.isnan(y[-1]).all()


@pytest.mark.parametrize("mode", ["warmup", "ewm"])
def test_threshold_sweeps_stay_exact(mode):
    """Nothing the normalisation or the scorer learns depends on the thresholds."""
    from dataclasses import replace

    from streamlstm import evaluation as E

    rng = np.random.default_rng(SEED)
    keys, times, x = scaled_events(rng, 3, 900)
    x[rng.random(900) < 0.03] += 50.0 * np.nanstd(x, axis=0)
    karr = np.asarray(keys, dtype=object)
    c = cfg(mode, norm_window=60, warmup=10, open_threshold=0.7, close_threshold=0.6)
    rep = E.replay(Detector(MODEL, c), karr, times, x)
    for thr in (0.6, 0.8, 0.9):
        alert, trans = E.replay_alerts(rep, thr)
        real = E.replay(Detector(MODEL, replace(c, open_threshold=thr)), karr, times, x)
        np.testing.assert_array_equal(trans, real.transition)
        np.testing.assert_array_equal(alert, real.alert)
        assert real.transition.any()
