"""Trainer, calibration and the train command on small synthetic fleets (seeded)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from streamlstm import cli
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import TrainingError
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kernels import train as KT
from streamlstm.model import load
from streamlstm.training import TrainConfig, train_model
from streamlstm.training import trainer as T
from tests.conftest import SEED

FEATS = ("temp", "pressure")


def fleet_events(
    n_streams: int, n_steps: int, seed: int = SEED, standardise: bool = False, features=FEATS
):
    fleet = generate_fleet(
        FleetSpec(
            n_streams=n_streams, n_steps=n_steps, anomaly_rate=0, seed=seed, features=features
        )
    )
    if standardise:
        # The model has one (fleet-wide) normalisation; synth levels differ by 10x between
        # streams, which a small, briefly trained model cannot track to the noise level.
        v = fleet.values
        fleet.values = ((v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)).astype(np.float32)
    keys, times, x, _ = fleet.events()
    return keys, times, x


# A random start, so that two epochs move every weight (a last-value start may win epoch 0).
TINY = TrainConfig(hidden=8, window=16, batch=8, epochs=2, progress=False, seed=3, start="random")


def test_training_beats_last_value_and_seasonal_naive():
    # Four correlated channels: the model can filter noise that a last-value forecast keeps.
    feats = ("temp", "pressure", "flow", "vibration")
    keys, times, x = fleet_events(6, 2000, standardise=True, features=feats)
    cfg = TrainConfig(hidden=16, window=64, batch=8, epochs=20, patience=5, lr=1e-3,
                      season=1440, progress=False, false_alarms_per_week=None, seed=1)  # fmt: skip
    model, rep = train_model(keys, times, x, feats, cfg)
    assert rep.best_val_loss is not None and rep.last_value_loss is not None
    assert rep.seasonal_naive_loss is not None
    # the last-value start is scored as epoch 0, and training improved on it
    assert rep.initial_val_loss == pytest.approx(rep.last_value_loss, rel=0.01)
    assert rep.best_epoch > 0
    assert rep.best_val_loss < 0.97 * rep.last_value_loss, f"seed {SEED}: {rep.summary()}"
    assert rep.best_val_loss < 0.1 * rep.seasonal_naive_loss
    assert rep.best_val_loss == min(e.val_loss for e in rep.history)


def test_random_start_learns_from_scratch():
    keys, times, x = fleet_events(4, 1000, standardise=True)
    cfg = TrainConfig(hidden=16, window=32, batch=8, epochs=8, lr=1e-2, start="random",
                      progress=False, false_alarms_per_week=None, delta=False)  # fmt: skip
    _, rep = train_model(keys, times, x, FEATS, cfg)
    assert rep.initial_val_loss > 0.5  # a random model of levels forecasts ~the mean
    assert rep.best_val_loss < 0.1 * rep.initial_val_loss
    assert rep.best_val_loss < 2 * rep.last_value_loss


def test_same_seed_same_weights_different_seed_different():
    keys, times, x = fleet_events(3, 300)
    m1, _ = train_model(keys, times, x, FEATS, TINY)
    m2, _ = train_model(keys, times, x, FEATS, TINY)
    for a, b in zip(m1.arrays().values(), m2.arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert m1.threshold == m2.threshold
    np.testing.assert_array_equal(m1.resid_scale, m2.resid_scale)
    m3, _ = train_model(keys, times, x, FEATS, TrainConfig(**{**TINY.__dict__, "seed": 4}))
    assert not np.array_equal(m1.head_weight, m3.head_weight)


def test_events_in_any_order_give_the_same_model():
    keys, times, x = fleet_events(3, 300)
    perm = np.random.default_rng(SEED).permutation(len(keys))
    m1, _ = train_model(keys, times, x, FEATS, TINY)
    m2, _ = train_model(keys[perm], times[perm], x[perm], FEATS, TINY)
    np.testing.assert_array_equal(m1.head_weight, m2.head_weight)


_REAL_LOSS_AND_GRAD = KT.loss_and_grad


def _nan_loss(*args, **kw):
    _, n, grads = _REAL_LOSS_AND_GRAD(*args, **kw)
    return float("nan"), n, grads


def test_nan_loss_raises_and_cli_writes_no_file(tmp_path, monkeypatch, capsys):
    keys, times, x = fleet_events(2, 200)
    monkeypatch.setattr(T.KT, "loss_and_grad", _nan_loss)
    with pytest.raises(TrainingError, match="diverged"):
        train_model(keys, times, x, FEATS, TINY)
    fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=200, anomaly_rate=0, features=FEATS))
    fleet.write_csv(tmp_path / "h.csv")
    out = tmp_path / "m.npz"
    rc = cli.main(["train", "--data", str(tmp_path / "h.csv"), "--key", "machine", "--time",
                   "ts", "--features", "temp,pressure", "--out", str(out), "--hidden", "4",
                   "--quiet"])  # fmt: skip
    assert rc == 2
    assert "diverged" in capsys.readouterr().err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "h.csv"]


def test_saved_model_scores_like_the_one_in_memory(tmp_path):
    keys, times, x = fleet_events(3, 400)
    model, _ = train_model(keys, times, x, FEATS, TINY)
    loaded = load(model.save(tmp_path / "m.npz"))
    cfg = DetectorConfig(warmup=5)
    a = Detector(model, cfg).process_many(list(keys), times, x)
    b = Detector(loaded, cfg).process_many(list(keys), times, x)
    assert np.isfinite(a.score).sum() > 1000
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.transition, b.transition)
    assert loaded.threshold == model.threshold
    np.testing.assert_array_equal(loaded.resid_scale, model.resid_scale)


def test_calibration_stays_within_the_budget():
    # 10-minute events over ~6 weeks: enough validation data to observe the budget.
    fleet = generate_fleet(FleetSpec(n_streams=4, n_steps=6000, period_s=600.0,
                                     anomaly_rate=0, seed=SEED, features=FEATS))  # fmt: skip
    keys, times, x, _ = fleet.events()
    budget = 3.0
    cfg = TrainConfig(hidden=8, window=32, batch=16, epochs=3, progress=False,
                      false_alarms_per_week=budget)  # fmt: skip
    det_cfg = DetectorConfig(warmup=10)
    model, rep = train_model(keys, times, x, FEATS, cfg, detector_config=det_cfg)
    cal = rep.calibration
    assert cal["resid_source"] == "validation"
    assert np.all(model.resid_scale > 0) and not np.all(model.resid_scale == 1.0)
    assert model.threshold is not None and 0.5 <= model.threshold < 1.0
    assert cal["allowed"] >= 5 and cal["attained"]
    assert cal["openings"] <= cal["allowed"]
    # not needlessly deaf: above the detector's default only when the default pages too much
    assert model.threshold <= cal["default_threshold"] or (
        cal["openings_at_default"] > cal["allowed"]
    )
    # independent check: the validation events replayed through a fresh detector
    det = Detector(model, det_cfg)
    opened = 0
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        t = times[idx]
        res = det.process_many([key] * len(idx), t, x[idx])
        split = t[0] + 0.8 * (t[-1] - t[0])
        opened += int(np.sum((res.transition == 1) & (t >= split)))
    assert opened <= cal["allowed"] + 1  # this replay starts each stream from its start


def test_too_little_history_keeps_the_last_value_forecaster_and_says_why():
    keys, times, x = fleet_events(1, 300)  # 240 training events x 2 features < 4,674 weights
    model, report = train_model(keys, times, x, FEATS, TrainConfig(hidden=32, progress=False))
    assert report.epochs_run == 0 and report.not_trained
    assert "too few to fit 4,674 weights" in report.not_trained
    assert report.summary().startswith("not trained: 480 training values")
    # a model of changes with a zero head: the last value, exactly
    assert model.delta and not model.head_weight.any() and not model.head_bias.any()
    fc = Detector(model).process_many(list(keys[:50]), times[:50], x[:50]).forecast
    np.testing.assert_allclose(fc[1:], x[:49], rtol=1e-6)
    levels, _ = train_model(keys, times, x, FEATS,
                            TrainConfig(hidden=32, progress=False, delta=False))  # fmt: skip
    lv = T.last_value_start(FEATS, hidden=32)
    for k, v in lv.arrays().items():
        if k.startswith(("weight", "bias")):
            np.testing.assert_array_equal(levels.arrays()[k], v, err_msg=k)
    # enough values per weight (a smaller net): trained as before
    _, small = train_model(keys, times, x, FEATS, TrainConfig(hidden=4, epochs=2, progress=False))
    assert small.not_trained is None and small.epochs_run == 2


def test_pipeline_budget_counts_every_streams_openings_per_day():
    # 10-minute events over ~6 weeks: the validation period is ~8.3 days of 4 streams
    fleet = generate_fleet(FleetSpec(n_streams=4, n_steps=6000, period_s=600.0,
                                     anomaly_rate=0, seed=SEED, features=FEATS))  # fmt: skip
    keys, times, x, _ = fleet.events()
    cfg = TrainConfig(hidden=8, window=32, batch=16, epochs=1, progress=False,
                      false_alarms_per_week=None, false_alarms_per_day=1.0)  # fmt: skip
    model, rep = train_model(keys, times, x, FEATS, cfg, detector_config=DetectorConfig())
    cal = rep.calibration
    assert "for the pipeline" in cal["budget"]
    assert 7.5 < cal["validation_days"] < 9.0
    assert cal["allowed"] == pytest.approx(cal["validation_days"])  # 1 a day, not 4
    assert cal["openings"] <= cal["allowed"] and model.threshold is not None
    assert "alert(s)/day over 4 stream(s)" in rep.summary()
    # the same data, one a day per stream-week instead: 4 streams allow 4x as many
    per_stream = T.TrainConfig(**{**cfg.__dict__, "false_alarms_per_week": 7.0,
                                  "false_alarms_per_day": None})  # fmt: skip
    _, rep2 = train_model(keys, times, x, FEATS, per_stream, detector_config=DetectorConfig())
    assert rep2.calibration["allowed"] == pytest.approx(4 * cal["allowed"], rel=0.01)
    # too short for the pipeline budget: said, and the default stands
    short = T.TrainConfig(**{**cfg.__dict__, "false_alarms_per_day": 0.05})
    m3, rep3 = train_model(keys, times, x, FEATS, short, detector_config=DetectorConfig())
    assert m3.threshold is None and "false alarm(s)/day for the pipeline" in rep3.summary()


def test_train_context_features_are_recorded_and_not_scored(tmp_path, capsys):
    fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=300, anomaly_rate=0, features=FEATS))
    fleet.write_csv(tmp_path / "h.csv.gz")
    out = tmp_path / "m.npz"
    base = ["train", "--data", str(tmp_path / "h.csv.gz"), "--key", "machine", "--time", "ts",
            "--features", "temp,pressure", "--out", str(out), "--hidden", "4", "--window", "16",
            "--epochs", "1", "--quiet"]  # fmt: skip
    assert cli.main([*base, "--context", "pressure"]) == 0
    m = load(out)
    assert m.context == ("pressure",) and m.scored_mask().tolist() == [1.0, 0.0]
    assert "context=pressure" in m.describe()
    assert cli.main([*base, "--context", "nope"]) == 2
    assert "--context nope: not among --features" in capsys.readouterr().err
    assert cli.main([*base, "--context", "temp,pressure"]) == 2
    assert "at least one must be scored" in capsys.readouterr().err


def test_train_takes_0_1_channels_as_context_unless_told(tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    n = 600
    temp = 20 + np.cumsum(rng.normal(0, 0.1, n))
    cmd = (rng.random(n) < 0.05).astype(int)  # a command channel: toggles now and then
    lines = ["ts,temp,cmd"] + [f"{60 * i},{temp[i]:.4f},{cmd[i]}" for i in range(n)]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.npz"
    base = ["train", "--data", str(tmp_path / "h.csv"), "--time", "ts", "--features",
            "temp,cmd", "--out", str(out), "--hidden", "4", "--epochs", "1"]  # fmt: skip
    assert cli.main(base) == 0
    assert load(out).context == ("cmd",)
    assert "context inputs (only 0/1 in the history" in capsys.readouterr().err
    assert cli.main([*base, "--context", "none", "--quiet"]) == 0
    assert load(out).context == ()


def test_train_command_writes_model_plot_and_report(tmp_path, capsys):
    fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=300, anomaly_rate=0, features=FEATS))
    fleet.write_csv(tmp_path / "h.csv.gz")
    out = tmp_path / "pump.npz"
    rc = cli.main(["train", "--data", str(tmp_path / "h.csv.gz"), "--key", "machine",
                   "--time", "ts", "--features", "temp,pressure", "--out", str(out),
                   "--hidden", "4", "--window", "16", "--epochs", "2", "--season", "1h",
                   "--plot", str(tmp_path / "loss.png"),
                   "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "last value" in err and "seasonal naive" in err
    m = load(out)
    assert m.features == FEATS and m.hidden == 4
    # two 5-hour streams cannot show a budget of one false alarm a week: said, not faked
    assert m.threshold is None and "threshold not calibrated" in err
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert '"epochs_run": 2' in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_forward_sees_what_the_detector_sees(cell):
    """Same forecasts from the training kernels and the detector: NaN imputation with
    the forecast, the time input from irregular gaps, two layers."""
    from streamlstm.model import Model
    from streamlstm.training.data import prepare
    from streamlstm.training.forecast import run_streams

    rng = np.random.default_rng(SEED)
    n = 300
    keys = np.array(["a"] * n + ["b"] * n, dtype=object)
    times = np.concatenate([np.cumsum(rng.exponential(60.0, n)), np.cumsum(rng.exponential(5, n))])
    x = rng.normal(size=(2 * n, 2)) * [3.0, 0.5] + [20.0, 1.0]
    x[rng.random(x.shape) < 0.1] = np.nan
    x[[0, n], 0] = np.nan  # a missing value at a stream's first event is imputed with 0
    data = prepare(keys, times, x, FEATS, 0.0, time_input=True)
    model = Model.random(FEATS, hidden=8, layers=2, cell=cell, seed=SEED, time_input=True)
    model = model.with_normalisation(data.norm_mean, data.norm_std)
    model = replace(model, dt_mean=data.dt_mean, dt_std=data.dt_std)
    res = run_streams(KT.Net(cell, model.arrays()), [s.xn for s in data.streams], [1, 1],
                      keep_preds=True, chunk=4)  # fmt: skip
    det = Detector(model, DetectorConfig(warmup=1))
    for s, preds in zip(data.streams, res.preds, strict=True):
        out = det.process_many([s.key] * s.n, s.times, s.x)
        fc = model.normalise(out.forecast)[1:]
        np.testing.assert_allclose(preds, fc, atol=2e-5, err_msg=f"seed {SEED}")


def test_train_command_decodes_with_the_pipeline_config(tmp_path, caplog):
    """--config: the daemon's decoder and feature transforms build the training data."""
    import json

    from streamlstm.io.decode import Decoder
    from streamlstm.service.config import load_config

    cfg_text = """
kafka: {bootstrap_servers: [localhost:9092], sasl_mechanism: PLAIN,
        security_protocol: SASL_SSL, sasl_username: u, sasl_password_env: NOT_SET_ANYWHERE}
pipelines:
  - name: cards
    source: {topics: [auth]}
    decode:
      key_field: card.id
      time_field: ts
      features:
        - {name: amount, transform: log}
        - {name: channel, transform: onehot, vocabulary: [pos, ecom]}
        - {name: hour, transform: time_of_day}
    model: {path: cards.npz}
"""
    (tmp_path / "p.yaml").write_text(cfg_text)
    rng = np.random.default_rng(SEED)
    lines = []
    for i in range(600):
        rec = {"card": {"id": f"c{i % 3}"}, "ts": 1_700_000_000 + 60 * i,
               "amount": float(rng.lognormal(3, 1)),
               "channel": ["pos", "ecom", "atm"][i % 3]}  # fmt: skip
        if i == 7:
            rec["amount"] = "12.5"  # a numeric string: the daemon rejects it as wrong_type
        lines.append(json.dumps(rec))
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "cards.npz"
    rc = cli.main(["train", "--data", str(tmp_path / "h.jsonl"), "--config",
                   str(tmp_path / "p.yaml"), "--out", str(out), "--hidden", "8",
                   "--epochs", "1", "--quiet"])  # fmt: skip
    assert rc == 0
    assert "wrong_type 1" in caplog.text
    model = load(out)
    expect = ("amount", "channel=pos", "channel=ecom", "channel=<other>", "hour_sin", "hour_cos")
    assert model.features == expect
    pipe = load_config(tmp_path / "p.yaml", env={"NOT_SET_ANYWHERE": "x"}).pipelines[0]
    Decoder(pipe.decode, model.features)  # the daemon accepts the model (raises otherwise)
    # log transform applied before normalisation: mean of ln(1 + amount) ~ 3
    assert 2.5 < model.norm_mean[0] < 3.5


def test_train_stream_norm_warmup_is_recorded_in_the_model(tmp_path):
    """README: `streamlstm train --stream-norm warmup`; the detector's default applies it."""
    fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=300, anomaly_rate=0, features=FEATS))
    fleet.write_csv(tmp_path / "h.csv.gz")
    out = tmp_path / "m.npz"
    rc = cli.main(["train", "--data", str(tmp_path / "h.csv.gz"), "--key", "machine",
                   "--time", "ts", "--features", "temp,pressure", "--out", str(out),
                   "--hidden", "4", "--epochs", "1", "--quiet",
                   "--stream-norm", "warmup"])  # fmt: skip
    assert rc == 0
    assert load(out).stream_norm == "warmup"


def test_context_inputs_are_not_in_the_training_losses():
    # A scored channel and a command channel of random 0/1 pulses (nothing can forecast
    # them): with the command as a context input, the losses the trainer reports (and
    # early-stops on) are the scored channel's alone, as if the command were not there
    # (before: the pulses' squared errors were most of every loss).
    rng = np.random.default_rng(SEED)
    n = 1200
    a = np.cumsum(rng.normal(0, 0.1, n)) + np.sin(np.arange(n) / 20.0)
    cmd = (rng.random(n) < 0.05).astype(float)
    keys, times = ["s"] * n, np.arange(n) * 60.0
    cfg = replace(TINY, calibrate=False)
    _, with_cmd = train_model(keys, times, np.c_[a, cmd], ("a", "cmd"), cfg, context=("cmd",))
    _, alone = train_model(keys, times, a[:, None], ("a",), cfg)
    assert with_cmd.last_value_loss == pytest.approx(alone.last_value_loss, rel=1e-6)
    assert with_cmd.initial_val_loss is not None and alone.initial_val_loss is not None
    assert with_cmd.last_value_loss < 0.5  # the pulses alone would be ~2 (normalised)


def test_a_model_barely_better_than_its_last_value_start_is_not_kept(monkeypatch):
    # The same fleet as above, where training gains well over 5%; with a margin it
    # cannot reach, the last-value start is kept and the summary says why.
    feats = ("temp", "pressure", "flow", "vibration")
    keys, times, x = fleet_events(6, 2000, standardise=True, features=feats)
    cfg = TrainConfig(hidden=16, window=64, batch=8, epochs=20, patience=5, lr=1e-3, progress=False,
                      false_alarms_per_week=None, seed=1)  # fmt: skip
    trained, rep = train_model(keys, times, x, feats, cfg)
    assert rep.best_epoch > 0 and rep.start_kept is None
    monkeypatch.setattr(T, "_KEEP_MARGIN", 0.9)
    kept, rep = train_model(keys, times, x, feats, cfg)
    assert rep.best_epoch == 0 and rep.best_val_loss == rep.initial_val_loss
    assert rep.start_kept and "last-value forecaster is kept" in rep.summary()
    start = T.as_delta(T.Model.random(feats, hidden=16, layers=1, cell="lstm", seed=1))
    for a, b in zip(kept.arrays().values(), start.arrays().values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_model_of_changes_forecasts_a_stream_at_a_level_training_never_saw():
    """SKAB's case: train on streams at one operating point, score one 40 training
    spreads away. The model of levels (the older default) forecasts garbage there; the
    model of changes (the default) forecasts it as well as at the level it trained at."""
    feats = ("temp", "pressure", "flow", "vibration")
    keys, times, x = fleet_events(6, 2000, standardise=True, features=feats)
    cfg = TrainConfig(hidden=16, window=64, batch=8, epochs=12, patience=4, lr=3e-3,
                      progress=False, false_alarms_per_week=None, seed=1)  # fmt: skip
    changes, rep = train_model(keys, times, x, feats, cfg)
    levels, _ = train_model(keys, times, x, feats, replace(cfg, delta=False))
    assert changes.delta and not levels.delta
    assert rep.best_val_loss < 0.95 * rep.last_value_loss, rep.summary()
    tk, tt, tx = fleet_events(1, 1500, seed=SEED + 7, standardise=True, features=feats)
    tx = tx.astype(np.float64)
    away = tx + 40.0 * levels.norm_std  # another operating point
    lv = np.mean((tx[200:-1] - tx[201:]) ** 2 / changes.norm_std**2)

    def mse(model, v):
        fc = Detector(model).process_many(list(tk), tt, v).forecast
        return float(np.mean((fc[201:] - v[201:]) ** 2 / model.norm_std**2))

    assert mse(levels, away) > 10 * max(lv, mse(levels, tx))
    assert mse(changes, away) < 1.001 * mse(changes, tx) < 1.1 * lv


def test_train_reads_changes_by_default_and_levels_when_told(tmp_path):
    fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=300, anomaly_rate=0, features=FEATS))
    fleet.write_csv(tmp_path / "h.csv")
    base = ["train", "--data", str(tmp_path / "h.csv"), "--key", "machine", "--time", "ts",
            "--features", "temp,pressure", "--hidden", "4", "--epochs", "1", "--quiet"]  # fmt: skip
    assert cli.main([*base, "--out", str(tmp_path / "c.npz")]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "l.npz"), "--inputs", "levels"]) == 0
    assert load(tmp_path / "c.npz").delta and not load(tmp_path / "l.npz").delta
    # per-stream normalisation: a model of levels (a model of changes needs none)
    assert cli.main([*base, "--out", str(tmp_path / "s.npz"), "--stream-norm", "warmup"]) == 0
    assert not load(tmp_path / "s.npz").delta


def test_one_short_stream_is_trained_by_enough_steps():
    # One stream of 2,500 events (a telemetry channel's history): 31 windows of 64, one
    # minibatch of 32 an epoch, so until min_steps the last-value start was kept untrained.
    rng = np.random.default_rng(SEED)
    n = 2500
    v = np.sin(np.arange(n) * 2 * np.pi / 300) + rng.normal(0, 0.02, n)
    keys, times, x = ["ch"] * n, np.arange(n) * 60.0, v[:, None].astype(np.float32)
    cfg = TrainConfig(hidden=16, progress=False, false_alarms_per_week=None, seed=1)
    _, rep = train_model(keys, times, x, ("value",), cfg)
    assert rep.batch < cfg.batch and -(-rep.n_windows // rep.batch) >= cfg.min_steps
    assert "steps an epoch" in rep.summary()
    assert rep.best_epoch > 0 and rep.best_val_loss < 0.8 * rep.last_value_loss, rep.summary()
    _, old = train_model(keys, times, x, ("value",), replace(cfg, min_steps=0))
    assert old.batch == cfg.batch and old.best_epoch == 0, old.summary()


def test_a_stream_whose_first_epochs_look_like_a_stall_is_trained_past_them():
    # The last-value start is a plateau: this stream's first epochs got no better, and
    # patience alone stopped training at the start (+0% MSE); 500 steps first: +41%.
    rng = np.random.default_rng(1)
    n = 2500
    period = rng.uniform(100, 500)
    v = np.sin(np.arange(n) * 2 * np.pi / period) + rng.normal(0, 0.02, n)
    cfg = TrainConfig(hidden=16, progress=False, false_alarms_per_week=None, seed=1,
                      min_values_per_weight=0)  # fmt: skip
    _, rep = train_model(["ch"] * n, np.arange(n) * 60.0, v[:, None], ("value",), cfg)
    assert rep.best_epoch > 0 and rep.best_val_loss < 0.8 * rep.last_value_loss, rep.summary()
