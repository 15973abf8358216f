"""Rebuild the shipped example: ``python -m streamlstm.examples.make_example``.

Writes ``pump.npz`` (a model) and ``pumps.csv`` (events) next to this file;
``streamlstm score --example`` scores one with the other.

The events: four pumps of one type (``pump-0000`` .. ``pump-0003``), columns
``machine, ts, temp, pressure, flow, label``, one event a minute for 8 hours,
from :func:`streamlstm.examples.synth.generate_fleet` without anomalies, each stream
moved to a common operating point (pumps of one type run at similar levels).
One obvious anomaly is added: ``pump-0002`` runs hot for 20 minutes (temp +4
and pressure +3 of its own standard deviations), ``label`` = 1 there.

The model is fitted the cheapest honest way: a randomly initialised LSTM
(hidden 32, PyTorch's initialisation) whose linear head is fitted by ridge
regression of the next event's normalised features on the hidden state (an
echo-state network), on 3 days of clean history of the same pumps that
precede the example file; the residual scale is calibrated on the last day
of that history. Its normalised one-step residual is about 0.1 per feature.
(``streamlstm.training`` landed later; 8 epochs of it on the same history,
hidden 16, took 22 s of CPU and reached a validation loss of 0.21 against
0.012 for the last-value forecaster, so the ridge fit stays until a trained
model beats it in seconds.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.model import Model
from streamlstm.model.baselines import fit_normalisation

HERE = Path(__file__).resolve().parent
FEATURES = ("temp", "pressure", "flow")
HISTORY_STEPS = 3 * 24 * 60
EXAMPLE_STEPS = 8 * 60
ANOMALY_STREAM = 2
ANOMALY_START = 300  # step within the example file
ANOMALY_LEN = 20
ANOMALY_SHIFT = {"temp": 4.0, "pressure": 3.0}  # in the stream's standard deviations
HIDDEN = 32
RIDGE = 1e-3
SEED = 7
# Common operating point (level, spread) per feature, with a small per-pump offset.
OPERATING = {"temp": (62.0, 1.5), "pressure": (4.2, 0.12), "flow": (180.0, 6.0)}


def _fleet() -> tuple[list[str], np.ndarray, np.ndarray]:
    spec = FleetSpec(
        n_streams=4,
        n_steps=HISTORY_STEPS + EXAMPLE_STEPS,
        period_s=60.0,
        start_time=1_714_521_600.0,  # 2024-05-01 00:00 UTC
        features=FEATURES,
        anomaly_rate=0.0,
        key_prefix="pump-",
        seed=SEED,
    )
    fleet = generate_fleet(spec)
    v = fleet.values.astype(np.float64)
    hist = v[:, :HISTORY_STEPS]
    z = (v - hist.mean(axis=1, keepdims=True)) / hist.std(axis=1, keepdims=True)
    rng = np.random.default_rng(SEED)
    level = np.array([OPERATING[f][0] for f in FEATURES])
    spread = np.array([OPERATING[f][1] for f in FEATURES])
    offset = rng.uniform(-1.0, 1.0, (v.shape[0], 1, len(FEATURES))) * spread
    values = level + offset + spread * z
    return fleet.keys, fleet.times, values


def _lstm_states(model: Model, xn: np.ndarray) -> np.ndarray:
    """(T, H) hidden states of a 1-layer LSTM over (T, F) normalised inputs (float64)."""
    w_ih = model.weight_ih[0].astype(np.float64)
    w_hh = model.weight_hh[0].astype(np.float64)
    b = (model.bias_ih[0] + model.bias_hh[0]).astype(np.float64)
    hid = model.hidden
    h = np.zeros(hid)
    c = np.zeros(hid)
    out = np.empty((xn.shape[0], hid))
    for t in range(xn.shape[0]):
        g = w_ih @ xn[t] + w_hh @ h + b
        i, f = 1 / (1 + np.exp(-g[:hid])), 1 / (1 + np.exp(-g[hid : 2 * hid]))
        cand, o = np.tanh(g[2 * hid : 3 * hid]), 1 / (1 + np.exp(-g[3 * hid :]))
        c = f * c + i * cand
        h = o * np.tanh(c)
        out[t] = h
    return out


def build_model(values: np.ndarray) -> Model:
    """Fit the head of a random LSTM on ``values[:, :HISTORY_STEPS]`` (see module doc)."""
    hist = values[:, :HISTORY_STEPS]
    mean, std = fit_normalisation(hist.reshape(-1, len(FEATURES)))
    base = Model.random(FEATURES, hidden=HIDDEN, seed=SEED).with_normalisation(mean, std)
    fit_steps = HISTORY_STEPS - 24 * 60
    feats, targets, cal_h, cal_y = [], [], [], []
    for s in range(hist.shape[0]):
        xn = (hist[s] - mean) / std
        h = _lstm_states(base, xn)
        # Skip the first hour: the state is still warming up from zeros.
        feats.append(h[60 : fit_steps - 1])
        targets.append(xn[61:fit_steps])
        cal_h.append(h[fit_steps : HISTORY_STEPS - 1])
        cal_y.append(xn[fit_steps + 1 : HISTORY_STEPS])
    hmat = np.concatenate(feats)
    y = np.concatenate(targets)
    ones = np.ones((hmat.shape[0], 1))
    a = np.hstack([hmat, ones])
    reg = RIDGE * np.eye(a.shape[1])
    reg[-1, -1] = 0.0  # do not shrink the intercept
    coef = np.linalg.solve(a.T @ a + reg, a.T @ y)
    head_w, head_b = coef[:-1].T, coef[-1]
    ch = np.concatenate(cal_h)
    resid = np.concatenate(cal_y) - (ch @ head_w.T + head_b)
    resid_scale = np.sqrt(np.mean(resid**2, axis=0))
    fitted = Model(
        cell="lstm",
        features=FEATURES,
        hidden=HIDDEN,
        weight_ih=base.weight_ih,
        weight_hh=base.weight_hh,
        bias_ih=base.bias_ih,
        bias_hh=base.bias_hh,
        head_weight=head_w,
        head_bias=head_b,
        norm_mean=mean,
        norm_std=std,
        resid_scale=np.ones(len(FEATURES)),
        provenance={
            "source": "streamlstm.examples.make_example",
            "method": "random LSTM, ridge-fitted head (echo-state network)",
            "seed": SEED,
        },
    )
    return fitted.with_calibration(
        resid_scale,
        None,
        {"residual_rms_normalised": [float(v) for v in resid_scale], "days": 1},
    )


def write_events(path: Path, keys: list[str], times: np.ndarray, values: np.ndarray) -> None:
    ex = values[:, HISTORY_STEPS:].copy()
    t = times[HISTORY_STEPS:]
    labels = np.zeros(ex.shape[:2], bool)
    sd = values[:, :HISTORY_STEPS].std(axis=1)
    win = slice(ANOMALY_START, ANOMALY_START + ANOMALY_LEN)
    for f, k in ANOMALY_SHIFT.items():
        j = FEATURES.index(f)
        ex[ANOMALY_STREAM, win, j] += k * sd[ANOMALY_STREAM, j]
    labels[ANOMALY_STREAM, win] = True
    stamps = (t * 1e3).astype("datetime64[ms]").astype("datetime64[s]").astype(str)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("machine,ts," + ",".join(FEATURES) + ",label\n")
        for step in range(ex.shape[1]):
            ts = stamps[step].replace("T", " ")
            for s, key in enumerate(keys):
                vals = ",".join(f"{v:.4f}" for v in ex[s, step])
                fh.write(f"{key},{ts},{vals},{int(labels[s, step])}\n")


def main() -> None:
    keys, times, values = _fleet()
    model = build_model(values)
    model.save(HERE / "pump.npz")
    write_events(HERE / "pumps.csv", keys, times, values)
    print(f"wrote {HERE / 'pump.npz'} ({model.describe()}) and {HERE / 'pumps.csv'}")
    print("residual rms (normalised):", np.round(model.resid_scale, 4).tolist())


if __name__ == "__main__":
    main()
