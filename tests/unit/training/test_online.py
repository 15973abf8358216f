"""Cold-start learning: OnlineLearner and learn_first_part (seeded, tiny)."""

from __future__ import annotations

import numpy as np

from streamlstm.detector import DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.training import TrainConfig
from streamlstm.training.online import OnlineLearner, adapt_config, learn_first_part
from tests.conftest import SEED

FEATS = ("temp", "pressure")
CFG = TrainConfig(hidden=8, epochs=2, progress=False, seed=5)


def events(n_streams=3, n_steps=300, anomaly_rate=0.0, seed=SEED):
    fleet = generate_fleet(FleetSpec(n_streams=n_streams, n_steps=n_steps, features=FEATS,
                                     anomaly_rate=anomaly_rate, seed=seed))  # fmt: skip
    return fleet, *fleet.events()


def test_scores_start_after_the_first_fit_and_batching_does_not_matter():
    _, keys, times, x, _ = events()
    whole = OnlineLearner(FEATS, CFG, DetectorConfig(warmup=5), learn_first=120)
    r1 = whole.process_many(list(keys), times, x)
    parts = OnlineLearner(FEATS, CFG, DetectorConfig(warmup=5), learn_first=120)
    scores = [parts.process_many(list(keys[a : a + 37]), times[a : a + 37], x[a : a + 37]).score
              for a in range(0, len(keys), 37)]  # fmt: skip
    # the first stream to reach 120 events triggers the fit: event 3 * 119 (time order)
    cut = 3 * 119 + 1
    assert np.isnan(r1.score[:cut]).all()
    assert np.isfinite(r1.score[cut:]).mean() > 0.99
    np.testing.assert_array_equal(np.concatenate(scores), r1.score)
    assert whole.fits == parts.fits == 1
    for a, b in zip(whole.model.arrays().values(), parts.model.arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refits_keep_every_stream_state():
    _, keys, times, x, _ = events(n_steps=400)
    ol = OnlineLearner(FEATS, CFG, DetectorConfig(warmup=5), learn_first=100, refit_every=300,
                       buffer=200, fine_tune_epochs=1)  # fmt: skip
    res = ol.process_many(list(keys), times, x)
    assert ol.fits >= 3
    assert ol.detector is not None and len(ol.detector.table) == 3
    first_model_end = 3 * 99 + 1
    assert np.isfinite(res.score[first_model_end:]).mean() > 0.99


def test_alerting_events_are_kept_out_of_learning():
    _, keys, times, x, _ = events(n_streams=1, n_steps=200)
    ol = OnlineLearner(FEATS, CFG, learn_first=50)
    ol._remember(list(keys[:4]), times[:4], x[:4], np.array([False, True, False, False]))
    buf = ol._buffers[str(keys[0])]
    assert np.isnan(buf.x[1]).all() and not np.isnan(buf.x[[0, 2, 3]]).any()


def test_adapt_config_gives_enough_steps_on_little_data():
    cfg = adapt_config(TrainConfig(window=64, batch=32), n_events=600, n_streams=1)
    assert cfg.window == 64 and cfg.batch == 1
    cfg = adapt_config(TrainConfig(window=64, batch=32), n_events=100, n_streams=1)
    assert cfg.window == 20
    big = adapt_config(TrainConfig(window=64, batch=32), n_events=1_000_000, n_streams=10)
    assert (big.window, big.batch) == (64, 32)


def test_learn_first_part_then_judge_the_rest_finds_anomalies():
    fleet, keys, times, x, label = events(n_streams=1, n_steps=3000, anomaly_rate=6.0, seed=7)
    n_learn = 900
    clean = ~label[:n_learn]
    model = learn_first_part(keys[:n_learn][clean], times[:n_learn][clean], x[:n_learn][clean],
                             FEATS, TrainConfig(hidden=16, epochs=15, progress=False))  # fmt: skip
    # 180 held-out minutes are far too short for a false-alarm budget per week: the
    # threshold stays the detector's default and the calibration says why
    assert model.threshold is None
    assert "too short" in model.calibration["reason"]
    from streamlstm.detector import Detector

    res = Detector(model, DetectorConfig(warmup=10)).process_many(list(keys), times, x)
    judged = np.arange(len(keys)) >= n_learn
    s = res.score
    inside = np.nanmean(s[judged & label])
    outside = np.nanmean(s[judged & ~label])
    assert label[judged].sum() > 20
    assert inside > outside + 0.1, f"seed 7: inside {inside:.3f} outside {outside:.3f}"
