"""Detection quality on synthetic fleets with injected anomalies, over several seeds.

    .venv/bin/python benchmarks/quality_synth.py [--seeds 20261121 1 2 3] [--epochs 10]
        [--stream-norm off|warmup|ewm] [--norm-window 256] [--raw] [--test-scale A B]
        [--inputs changes|levels]

For each seed: train an LSTM on a clean fleet (8 streams x 3000 events, each
stream standardised, as in tests/unit/evaluation/test_evaluation.py), replay a fleet
with every kind of injected anomaly (seed + 1) through the default detector,
and compare with the last-value forecaster through the same scorer. Per
anomaly kind, for both: injections caught (an alert opens inside), the share of
each caught injection's events the alert stays open for, the events from its start
to the opening (median), and how often the opening's first named feature is an
injected channel.

``--test-scale A B`` replays the test fleet at another scale and level than
the training fleet. ``--stream-norm warmup|ewm``: the fleets are not standardised by the script
(which uses each whole stream's mean and std, the future included); the
trainer and the detector normalise each stream from its own first events.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from streamlstm import evaluation as E
from streamlstm.detector import BatchResult, Detector
from streamlstm.examples.synth import Fleet, FleetSpec, generate_fleet
from streamlstm.model.baselines import last_value_model
from streamlstm.training.trainer import TrainConfig, train_model

FEATS = ("temp", "pressure", "flow", "vibration")


def fleet(seed: int, rate: float, n: int, steps: int, raw: bool = False) -> Fleet:
    spec = FleetSpec(n_streams=n, n_steps=steps, anomaly_rate=rate, seed=seed, features=FEATS)
    f = generate_fleet(spec)
    if raw:
        return f
    v = f.values
    f.values = ((v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)).astype(np.float32)
    return f


class KindTally:
    """Per anomaly kind, over seeds: injections, those caught (an alert opens inside), the
    share of each caught one's events in alert, the events to the opening, and whether
    the opening's first named feature is an injected channel."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.caught: Counter[str] = Counter()
        self.held: dict[str, list[float]] = {}
        self.delay: dict[str, list[int]] = {}
        self.named: Counter[str] = Counter()

    def add(self, res: BatchResult, r: E.Replay, test: Fleet) -> None:
        opens = [tr for tr in res.transitions if tr.kind == "opened"]
        for an in test.anomalies:
            idx = r.stream_index(an.key)
            t_s = r.times[idx]
            inside = (t_s >= an.start) & (t_s <= an.end)
            self.kinds[an.kind] += 1
            first = [tr for tr in opens if tr.key == an.key and an.start <= tr.time <= an.end]
            if not first:
                continue
            self.caught[an.kind] += 1
            self.held.setdefault(an.kind, []).append(float(res.alert[idx][inside].mean()))
            lag = int(np.count_nonzero(t_s[inside] < first[0].time))
            self.delay.setdefault(an.kind, []).append(lag)
            top = first[0].contributions[0][0] if first[0].contributions else ""
            self.named[an.kind] += int(top in an.features)

    def row(self, kind: str | None) -> str:
        """``caught | open | delay | named`` of one kind (None: all kinds)."""
        ks = [kind] if kind else sorted(self.kinds)
        n = sum(self.caught[k] for k in ks)
        held = [v for k in ks for v in self.held.get(k, [])]
        delay = [v for k in ks for v in self.delay.get(k, [])]
        share = f"{100 * np.mean(held):.0f}%" if held else "-"
        lag = f"{np.median(delay):.0f}" if delay else "-"
        named = sum(self.named[k] for k in ks)
        return f"{n}/{sum(self.kinds[k] for k in ks)} | {share} | {lag} | {named}/{n}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[20261121, 1, 2, 3])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--inputs", choices=["changes", "levels"], default="changes",
                    help="what the LSTM's cell reads (streamlstm train --inputs)")  # fmt: skip
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--stream-norm", choices=["off", "warmup", "ewm"], default="off",
                    help="per-stream normalisation in the trainer and detector instead of "
                    "standardising each stream in the script")  # fmt: skip
    ap.add_argument("--norm-window", type=int, default=256, help="events of --stream-norm")
    ap.add_argument("--test-scale", type=float, nargs=2, default=(1.0, 0.0), metavar=("A", "B"),
                    help="replay the test fleet as A * value + B: streams at a scale and "
                    "level the model never saw (SCORING.md's per-stream finding)")  # fmt: skip
    ap.add_argument("--raw", action="store_true",
                    help="no standardisation by the script even with --stream-norm off "
                    "(what a daemon without per-stream normalisation sees)")  # fmt: skip
    args = ap.parse_args()
    raw = args.raw or args.stream_norm != "off"
    tallies = {"LSTM": KindTally(), "last value": KindTally()}
    print(
        "| seed | LSTM caught | false | F1 | last value caught | false | F1 | val MSE LSTM / LV |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        k, t, x, _ = fleet(seed, 0.0, args.streams, args.steps, raw).events()
        cfg = TrainConfig(
            hidden=args.hidden,
            window=64,
            batch=8,
            epochs=args.epochs,
            patience=5,
            lr=1e-2,
            progress=False,
            seed=1,
            stream_norm=args.stream_norm,
            norm_window=args.norm_window,
            delta=args.inputs == "changes",
        )
        model, rep = train_model(k, t, x, FEATS, cfg)
        test = fleet(seed + 1, 3.0, args.streams, args.steps, raw)
        k, t, x, _ = test.events()
        x = args.test_scale[0] * x.astype(np.float64) + args.test_scale[1]
        lv = last_value_model(FEATS, model.norm_mean, model.norm_std)
        lv = lv.with_calibration(model.resid_scale, None)
        lv = lv.with_stream_norm(model.stream_norm, model.norm_window)
        qs = []
        for m, tally in zip((model, lv), tallies.values(), strict=True):
            r = E.replay(Detector(m), k, t, x, windows=test.windows())
            qs.append(E.quality(r)[0])
            tally.add(Detector(m).process_many(list(r.keys), r.times, r.x), r, test)
        a, b = qs
        print(
            f"| {seed} | {a.caught}/{a.windows} | {a.false_alerts} | {a.f1:.2f} | "
            f"{b.caught}/{b.windows} | {b.false_alerts} | {b.f1:.2f} | "
            f"{rep.best_val_loss:.4f} / {rep.last_value_loss:.4f} |"
        )

    print("\nby anomaly kind, all seeds (open share, delay and named right over the caught;")
    print("delay: events from the injection's start to the alert's opening, median):")
    print("| kind | " + " | ".join(f"{n}: caught | open | delay | named" for n in tallies) + " |")
    print("|---|" + "---|---|---|---|" * len(tallies))
    kinds = sorted(tallies["LSTM"].kinds)
    for kind in [*kinds, None]:
        cells = [t.row(kind) for t in tallies.values()]
        print(f"| {kind or '**all**'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
