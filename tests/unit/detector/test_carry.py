"""Carried states: a stream scored after its training history continues from where the
history left it, exactly; anything else starts cold."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from streamlstm import cli
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.detector.carry import carry_states
from streamlstm.kernels import layout as KL
from streamlstm.model import Model, load
from streamlstm.model.core import weights_sha256
from streamlstm.training import TrainConfig, train_model
from tests.conftest import SEED

FEATS = ("value", "cmd")
LEVELS = np.array([-1.0, -0.3, 0.4, 1.1])


def commanded(rng: np.random.Generator, n: int) -> np.ndarray:
    """A value moved between four levels by 0/1 command pulses (2% of the events), as a
    telemetry channel: (n, 2) value and command."""
    cmd = (rng.random(n) < 0.02).astype(float)
    which = rng.integers(0, len(LEVELS), n)
    level = np.empty(n)
    cur = 0
    for i in range(n):
        if i >= 2 and cmd[i - 2]:
            cur = which[i - 2]
        level[i] = LEVELS[cur]
    return np.c_[level + rng.normal(0, 0.01, n), cmd]


def history(n_streams: int = 2, n: int = 1500, seed: int = SEED):
    rng = np.random.default_rng(seed)
    keys, times, xs = [], [], []
    for s in range(n_streams):
        keys += [f"ch{s}"] * n
        times.append(np.arange(n) * 60.0 + s)
        xs.append(commanded(rng, 2 * n))
    x = np.concatenate([v[:n] for v in xs])
    later = [v[n:] for v in xs]  # each stream's next n events
    return keys, np.concatenate(times), x, later


@pytest.fixture(scope="module")
def trained():
    keys, times, x, later = history()
    cfg = TrainConfig(hidden=8, epochs=2, progress=False, seed=1, false_alarms_per_week=None)
    model, rep = train_model(keys, times, x, FEATS, cfg, context=("cmd",))
    return model, rep, (keys, times, x, later)


def continuation(later, n_hist: int):
    keys = [f"ch{s}" for s in range(len(later)) for _ in range(len(later[s]))]
    times = np.concatenate([(n_hist + np.arange(len(v))) * 60.0 + s for s, v in enumerate(later)])
    order = np.argsort(times, kind="stable")
    x = np.concatenate(later)
    return [keys[i] for i in order], times[order], x[order]


def same(a, b) -> None:
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.hold, b.hold)
    np.testing.assert_array_equal(a.alert, b.alert)
    np.testing.assert_array_equal(a.forecast, b.forecast)
    assert [(t.kind, t.key, t.alert_id) for t in a.transitions] == [
        (t.kind, t.key, t.alert_id) for t in b.transitions
    ]


def test_a_stream_continues_its_training_history_exactly(trained, tmp_path):
    model, rep, (keys, times, x, later) = trained
    assert model.n_carried == 2 and rep.carried == 2 and "carried the state of 2" in rep.summary()
    ck, ct, cx = continuation(later, 1500)
    plain = model.with_carried(None)
    ref = Detector(plain)
    order = np.argsort(times, kind="stable")
    ref.process_many([keys[i] for i in order], times[order], x[order])
    want = ref.process_many(ck, ct, cx)
    same(Detector(model).process_many(ck, ct, cx), want)
    # through the file, and one event at a time
    loaded = load(model.save(tmp_path / "m.npz"))
    assert loaded.n_carried == 2 and weights_sha256(loaded.arrays()) == weights_sha256(
        plain.arrays()
    )
    det = Detector(loaded)
    one = [det.process_one(k, t, v) for k, t, v in zip(ck, ct, cx, strict=True)]
    np.testing.assert_array_equal(np.concatenate([r.score for r in one]), want.score)
    assert det.carried is not None and det.carried.seeded == 2


def test_a_cold_start_pages_at_new_levels_a_continued_stream_does_not(trained):
    model, _, (_, _, _, later) = trained
    ck, ct, cx = continuation(later, 1500)
    warm = Detector(model).process_many(ck, ct, cx)
    cold = Detector(model.with_carried(None)).process_many(ck, ct, cx)
    n_warm = sum(t.kind == "opened" for t in warm.transitions)
    n_cold = sum(t.kind == "opened" for t in cold.transitions)
    assert n_warm < n_cold, (n_warm, n_cold)


def test_other_keys_earlier_events_and_other_settings_start_cold(trained, caplog):
    model, _, (keys, times, x, later) = trained
    plain = model.with_carried(None)
    ck, ct, cx = continuation(later, 1500)
    # a replay of the history itself (events at or before its end), as NAB's protocol
    order = np.argsort(times, kind="stable")
    hk, ht, hx = [keys[i] for i in order], times[order], x[order]
    same(Detector(model).process_many(hk, ht, hx), Detector(plain).process_many(hk, ht, hx))
    # keys training never saw
    ok = [k + "-new" for k in ck]
    same(Detector(model).process_many(ok, ct, cx), Detector(plain).process_many(ok, ct, cx))
    # settings that shape the state: cold, and said once
    cfg = DetectorConfig(smooth=5)
    with caplog.at_level(logging.WARNING, logger="streamlstm.detector.carry"):
        det = Detector(model, cfg)
    assert det.carried is None and "other detector settings (smooth 3 there, 5 here)" in caplog.text
    same(det.process_many(ck, ct, cx), Detector(plain, cfg).process_many(ck, ct, cx))
    # thresholds do not shape the state: carried
    assert Detector(model, DetectorConfig(open_threshold=0.7)).carried is not None


def test_a_restored_stream_keeps_its_checkpoint_not_the_carried_state(trained):
    model, _, (_, _, _, later) = trained
    ck, ct, cx = continuation(later, 1500)
    half = len(ck) // 2
    first = Detector(model)
    first.process_many(ck[:half], ct[:half], cx[:half])
    snap = first.table.snapshot()
    want = first.process_many(ck[half:], ct[half:], cx[half:])
    again = Detector(model)
    again.table.restore(snap)
    same(again.process_many(ck[half:], ct[half:], cx[half:]), want)
    assert again.carried is not None and again.carried.seeded == 0


def test_a_key_is_seeded_at_its_first_appearance_only(trained):
    model, _, (_, _, _, later) = trained
    ck, ct, cx = continuation(later, 1500)
    det = Detector(model)
    det.process_many(ck[:50], ct[:50], cx[:50])
    assert det.carried is not None and det.carried.seeded == 2
    det.table.drop(keys=["ch0"])  # evicted; back later: cold, not the training's old state
    res = det.process_many(["ch0"], [ct[-1] + 60.0], cx[-1:])
    assert det.carried.seeded == 2 and int(det.table.arrays["istat"][res.slots[0], 0]) == 1
    # a checkpoint's streams are forgotten by the daemon before their events come
    fresh = Detector(model)
    fresh.carried.forget(["ch1"])  # type: ignore[union-attr]
    fresh.process_many(ck[:50], ct[:50], cx[:50])
    assert fresh.carried is not None and fresh.carried.seeded == 1


def test_streams_ending_in_an_alert_are_left_out():
    rng = np.random.default_rng(SEED)
    x = commanded(rng, 1200)
    x[-40:, 0] += 5.0  # the history ends inside an incident
    model = Model.random(FEATS, hidden=4, seed=SEED).with_context(["cmd"])
    keys, times = ["a"] * 1200 + ["b"] * 1200, np.r_[np.arange(1200.0), np.arange(1200.0)]
    clean = commanded(rng, 1200)
    out, kept, left = carry_states(model, keys, times, np.r_[x, clean])
    assert (kept, left) == (1, 1) and out.n_carried == 1
    assert int(out.carried["col.istat"][0, KL.I_IN_ALERT]) == 0


def test_carry_streams_bounds_what_the_model_file_holds():
    keys, times, x, _ = history(n_streams=3, n=400)
    cfg = TrainConfig(hidden=4, epochs=1, progress=False, false_alarms_per_week=None)
    none, rep = train_model(keys, times, x, FEATS, replace(cfg, carry_streams=2))
    assert none.carried is None and "not carried (more than --carry-streams 2)" in rep.summary()
    off, rep = train_model(keys, times, x, FEATS, replace(cfg, carry_streams=0))
    assert off.carried is None and rep.carry_note is None


def _csv(path, keys, times, x):
    with open(path, "w") as fh:
        fh.write("key,time,value,cmd\n")
        for k, t, (v, c) in zip(keys, times, x, strict=True):
            fh.write(f"{k},{t},{v},{int(c)}\n")
    return str(path)


def test_train_and_score_commands_say_what_was_carried(tmp_path, capsys):
    keys, times, x, later = history(n_streams=1, n=600)
    path = _csv(tmp_path / "h.csv", keys, times, x)
    out = tmp_path / "m.npz"
    rc = cli.main(["train", "--data", path, "--key", "key", "--time", "time",
                   "--features", "value,cmd", "--hidden", "4", "--epochs", "1",
                   "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "carried the state of 1 stream(s)" in capsys.readouterr().err
    assert load(out).n_carried == 1
    ck, ct, cx = continuation(later, 600)
    for name, t in (("later", ct), ("again", times)):  # after the history; a replay of it
        data = _csv(tmp_path / f"{name}.csv", ck, t, cx if name == "later" else x)
        scores = str(tmp_path / f"{name}.scores.csv")
        rc = cli.main(["score", "--model", str(out), "--input", data, "--key", "key",
                       "--time", "time", "--out", scores])  # fmt: skip
        n = 1 if name == "later" else 0
        assert rc == 0
        assert f"{n} of the 1 stream(s) whose training history" in capsys.readouterr().err
    rc = cli.main(["train", "--data", path, "--key", "key", "--time", "time",
                   "--features", "value,cmd", "--hidden", "4", "--epochs", "1",
                   "--carry-streams", "0", "--out", str(out)])  # fmt: skip
    assert rc == 0 and load(out).n_carried == 0


def test_the_state_is_replayed_from_each_streams_last_events():
    keys, times, x, _ = history(n_streams=2, n=600)
    model = Model.random(FEATS, hidden=4, seed=SEED).with_context(["cmd"])
    rev = np.arange(len(keys))[::-1]  # any order in, each stream's time order kept
    out, kept, _ = carry_states(model, [keys[i] for i in rev], times[rev], x[rev], tail=250)
    ref = Detector(model)
    for s in ("ch0", "ch1"):
        idx = [i for i, k in enumerate(keys) if k == s][-250:]
        ref.process_many([s] * 250, times[idx], x[idx])
    want = ref.table.snapshot(keys=["ch0", "ch1"])
    assert kept == 2
    for name in ("h", "c", "sstat", "istat"):
        np.testing.assert_array_equal(out.carried[f"col.{name}"], want[f"col.{name}"])
