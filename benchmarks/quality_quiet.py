"""False openings on long clean fleets: does the detector stay quiet for weeks?

    .venv/bin/python benchmarks/quality_quiet.py [--seeds 11 12] [--streams 8] [--steps 40000]

A fleet without anomalies (``streamlstm.examples.synth``: daily, 12-hour and weekly
seasonality, a slow and a fast AR(1) part, one event a minute, each stream
standardised as in ``quality_synth.py``) replayed through the default detector with
the last-value forecaster, so that only the scorer is measured. Every opening is a
false alert. 40,000 steps are 28 days: long enough for the views that mature over
weeks (the range view) to judge, and to see each week's extremes.
"""

from __future__ import annotations

import argparse

import numpy as np
from quality_synth import FEATS, fleet

from streamlstm.detector import Detector
from streamlstm.model.baselines import last_value_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40000)
    args = ap.parse_args()
    bins = 5000
    print(f"| seed | false openings | alert share | openings per {bins}-step bin |")
    print("|---|---|---|---|")
    total = 0
    for seed in args.seeds:
        k, t, x, _ = fleet(seed, 0.0, args.streams, args.steps).events()
        lv = last_value_model(FEATS, np.zeros(len(FEATS)), np.ones(len(FEATS)))
        res = Detector(lv).process_many(list(k), t, x.astype(np.float64))
        opened = np.array([tr.index for tr in res.transitions if tr.kind == "opened"], int)
        keys = np.asarray(k)
        step = np.zeros(len(keys), int)
        for key in np.unique(keys):
            at = np.flatnonzero(keys == key)
            step[at] = np.arange(len(at))
        per_bin = np.bincount(step[opened] // bins, minlength=-(-args.steps // bins))
        bins_s = " ".join(map(str, per_bin))
        print(f"| {seed} | {len(opened)} | {res.alert.mean():.4f} | {bins_s} |")
        total += len(opened)
    days = len(args.seeds) * args.streams * args.steps / 1440
    print(f"\n{total} false openings in {days:.0f} stream-days ({total / days:.3f} a stream-day)")


if __name__ == "__main__":
    main()
