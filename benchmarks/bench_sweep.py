"""Cost of a threshold sweep: alert-machine replay of recorded scores vs full detector re-runs.

    .venv/bin/python benchmarks/bench_sweep.py [--streams 200] [--steps 2000] [--hidden 32]

``evaluate`` records the scores of one replay and re-runs only the alert
state machine per threshold (:func:`streamlstm.evaluation.replay_alerts`);
this is exact because nothing the scorer learns depends on the thresholds
(tests/unit/evaluation/test_evaluation.py checks it against full re-runs). Here both are
timed on a synthetic fleet, and the outputs are compared.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streamlstm import evaluation as E
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.model import Model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--thresholds", type=int, default=5, help="full re-runs to time")
    args = ap.parse_args()
    fleet = generate_fleet(FleetSpec(n_streams=args.streams, n_steps=args.steps, seed=0))
    keys, times, x, _ = fleet.events()
    model = Model.random(fleet.features, hidden=args.hidden, seed=0)
    model = model.with_normalisation(x.mean(0), x.std(0))
    cfg = DetectorConfig()
    E.replay(Detector(model, cfg), keys[:1000], times[:1000], x[:1000])  # compile
    t0 = time.perf_counter()
    rep = E.replay(Detector(model, cfg), keys, times, x, windows=fleet.windows())
    t_replay = time.perf_counter() - t0
    thr = np.linspace(0.55, 0.95, args.thresholds)
    E.replay_alerts(rep, 0.7)  # compile + group cache
    t0 = time.perf_counter()
    swept = [E.replay_alerts(rep, float(t)) for t in thr]
    t_machine = (time.perf_counter() - t0) / len(thr)
    t0 = time.perf_counter()
    pts = E.sweep(rep, thr.tolist())
    t_sweep = (time.perf_counter() - t0) / len(thr)
    t0 = time.perf_counter()
    same = True
    for t, (alert, trans) in zip(thr, swept, strict=True):
        c = DetectorConfig(open_threshold=float(t))
        full = E.replay(Detector(model, c), keys, times, x, windows=fleet.windows())
        same &= bool(np.array_equal(full.alert, alert) and np.array_equal(full.transition, trans))
    t_full = (time.perf_counter() - t0) / len(thr)
    n = len(rep)
    print(f"{n} events, {args.streams} streams, LSTM hidden {args.hidden}")
    print(f"one full detector replay:     {t_replay:8.3f} s ({1e9 * t_replay / n:.0f} ns/event)")
    print(f"full re-run per threshold:    {t_full:8.3f} s")
    print(f"alert machine per threshold: {t_machine:8.4f} s ({1e9 * t_machine / n:.1f} ns/event)")
    print(f"sweep point incl. metrics:   {t_sweep:8.4f} s")
    print(f"speed-up per threshold (full / sweep point): {t_full / t_sweep:.0f}x")
    print(f"replayed alerts identical to full re-runs at {len(thr)} thresholds: {same}")
    print(f"caught at each threshold: {[p.quality.caught for p in pts]}")


if __name__ == "__main__":
    main()
