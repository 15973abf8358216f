"""Incidents a value alone does not show: does the trained LSTM catch them where the last
value does not?

    .venv/bin/python benchmarks/contextual.py [--seeds 0 1 2 3] [--min-steps 32]

Telemetry-like channels (the issue's spacecraft benchmark: one value, command inputs,
a short history per channel), each one stream: 2,500 events to train on as ``streamlstm
train`` would (the trainer's defaults, the eight 0/1 command channels context inputs),
8,000 to score with one incident that keeps the value inside its normal range:

- ``sine``: a noisy sine (period 100-400 events, noise sd 0.02); incidents: the period
  halves for 300 events, the phase jumps by half a period, the amplitude halves for 400
  events, the value held at its current reading for 300 events.
- ``commanded``: a value that moves to the commanded level (eight levels) two events
  after each command pulse (one a minute with probability 2%), noise sd 0.01 (as
  ``command_channel.py``); incident: for 400 events the commands come and the value does
  not follow them.
- ``response``: as ``commanded``, but the value approaches the commanded level as a
  first-order lag (time constant 10 events); incident: for 400 events the lag is 40.

For each seed and shape the trained model and the last-value forecaster (the model's
normalisation and residual scales) through the default detector: incidents caught (an
alert opens inside), false openings (outside, after the first 400 events), and the
training's MSE gain over the last value. The test part is the same channel later on
(its events after the training's): the trained model continues the stream from the state
its history left (``Model.carried``); "trained, cold" is the same model starting the
stream cold, as for a channel it never saw (or with ``--carry-streams 0``).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from streamlstm.detector import Detector
from streamlstm.model.baselines import last_value_model
from streamlstm.training.trainer import TrainConfig, train_model

K = 8
N_TRAIN, N_TEST = 2500, 8000
AT = 5000  # the incident's first event in the test part


def commands(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    cmd = np.zeros((n, K))
    fire = np.flatnonzero(rng.random(n) < p)
    cmd[fire, rng.integers(0, K, len(fire))] = 1.0
    return cmd


def sine(rng: np.random.Generator, n: int, period: float, incident: str | None) -> np.ndarray:
    t = np.arange(n, dtype=float)
    phase = 2 * np.pi * t / period
    amp = np.ones(n)
    if incident == "frequency":
        # the period halves for 300 events, continuous in phase
        rate = np.where((t >= AT) & (t < AT + 300), 2.0, 1.0)
        phase = 2 * np.pi * np.cumsum(rate) / period
    elif incident == "phase":
        phase = np.where(t >= AT, phase + np.pi, phase)
    elif incident == "amplitude":
        amp = np.where((t >= AT) & (t < AT + 400), 0.5, 1.0)
    v = amp * np.sin(phase) + rng.normal(0, 0.02, n)
    if incident == "held":
        v[AT : AT + 300] = v[AT]
    return v


def commanded(
    rng: np.random.Generator, n: int, levels: np.ndarray, cmd: np.ndarray, tau: float | None,
    incident: str | None,
) -> np.ndarray:  # fmt: skip
    v = np.empty(n)
    cur, target = 0.0, levels[0]
    for i in range(n):
        ignored = incident == "ignored" and AT <= i < AT + 400
        if i >= 2 and cmd[i - 2].any() and not ignored:
            target = levels[int(np.argmax(cmd[i - 2]))]
        if tau is None:
            cur = target
        else:
            lag = 40.0 if incident == "slow" and AT <= i < AT + 400 else tau
            cur += (target - cur) / lag
        v[i] = cur
    return v + rng.normal(0, 0.01, n)


CASES = (
    ("sine", "frequency", (AT, AT + 300)),
    ("sine", "phase", (AT, AT + 50)),
    ("sine", "amplitude", (AT, AT + 400)),
    ("sine", "held", (AT, AT + 300)),
    ("commanded", "ignored", (AT, AT + 400)),
    ("response", "slow", (AT, AT + 400)),
)


def series(shape: str, incident: str | None, seed: int, n: int, part: int) -> np.ndarray:
    """(n, 1 + K): the value and the command channels; ``part`` 0 = training, 1 = test
    (the same channel, other draws)."""
    rng = np.random.default_rng([seed, part])
    shape_rng = np.random.default_rng(seed)  # the channel's constants, shared by both parts
    period = shape_rng.uniform(100, 400)
    levels = shape_rng.uniform(-1, 1, K)
    cmd = commands(rng, n, 0.02)
    if shape == "sine":
        v = sine(rng, n, period, incident)
    else:
        v = commanded(rng, n, levels, cmd, 10.0 if shape == "response" else None, incident)
    return np.c_[v, cmd].astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--min-steps", type=int, default=TrainConfig().min_steps)
    args = ap.parse_args()
    feats = ("value", *(f"c{k}" for k in range(K)))
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    gains: dict[str, list[float]] = defaultdict(list)
    for seed in args.seeds:
        for shape, incident, (a, b) in CASES:
            tr = series(shape, None, seed, N_TRAIN, 0)
            te = series(shape, incident, seed, N_TEST, 1)
            cfg = TrainConfig(progress=False, seed=seed, min_steps=args.min_steps)
            model, rep = train_model(["ch"] * N_TRAIN, np.arange(N_TRAIN) * 60.0, tr, feats,
                                     cfg, context=feats[1:])  # fmt: skip
            gain = 0.0
            if rep.best_epoch and rep.best_val_loss and rep.last_value_loss:
                gain = 1.0 - rep.best_val_loss / rep.last_value_loss
            gains[shape].append(gain)
            lv = last_value_model(feats, model.norm_mean, model.norm_std)
            lv = lv.with_calibration(model.resid_scale, None).with_context(feats[1:])
            later = (N_TRAIN + np.arange(N_TEST)) * 60.0
            runs = (("trained", model), ("trained, cold", model.with_carried(None)),
                    ("last value", lv))  # fmt: skip
            for name, m in runs:
                r = Detector(m).process_many(["ch"] * N_TEST, later, te)
                opens = [t.index for t in r.transitions if t.kind == "opened"]
                row = tally[(f"{shape}: {incident}", name)]
                row[0] += 1
                row[1] += any(a <= i < b for i in opens)
                row[2] += sum(1 for i in opens if i >= 400 and not a <= i < b + 50)
                inside = r.alert[a:b]
                row[3] += int(100 * inside.mean()) if any(a <= i < b for i in opens) else 0
                row[4] += int(r.alert[400:a].sum())
    names = ("trained", "trained, cold", "last value")
    print("| shape: incident | " + " | ".join(
        f"{n}: caught | false openings | open share" for n in names) + " |")  # fmt: skip
    print("|---|" + "---|---|---|" * len(names))
    for shape, incident, _ in CASES:
        key = f"{shape}: {incident}"
        cells = []
        for name in names:
            n, c, f, share, _ = tally[(key, name)]
            cells.append(f"{c}/{n} | {f} | {share / max(c, 1):.0f}%")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print()
    for shape, g in gains.items():
        print(f"{shape}: the trained model's MSE gain over the last value, per run: "
              + ", ".join(f"{100 * x:+.0f}%" for x in g))  # fmt: skip


if __name__ == "__main__":
    main()
