"""Detection quality on SKAB valve2 (8 sensors at 1 Hz, four runs with an induced valve fault).

    .venv/bin/python benchmarks/quality_skab.py [--data ../shared/data/skab-valve2]
        [--forecaster lstm|last-value|both] [--hidden 32] [--epochs 40] [--json out.json]
        [--stream-norm off|warmup|ewm] [--norm-window 256] [--raw]

SKAB's protocol: rows after the first 400 of each run are judged point by
point (the per-event alert flag against the ``anomaly`` column): F1,
false-alarm rate FAR = FP / (FP + TN), missed-alarm rate MAR = FN / (FN + TP).

Method (general, nothing tuned to these files):

- Per-stream normalisation: each run (and the anomaly-free run) is
  standardised with the mean and standard deviation of its own first 400
  rows, the part SKAB lets a detector learn a run's normal behaviour from.
  (The model's own normalisation is fleet-wide; the runs sit at different
  operating points, which SCORING.md found fatal without this.) With
  ``--stream-norm warmup|ewm`` the script does not: the raw runs go to the
  trainer and the detector, which learn each run's statistics themselves
  from its first ``--norm-window`` rows (``DetectorConfig.stream_norm``),
  as the daemon does.
- One LSTM is trained on ``anomaly-free.csv`` plus the first 400 rows of every
  run (:func:`streamlstm.training.trainer.train_model`, time-ordered
  validation split, early stopping), and calibrated by the trainer: residual
  scales and the alert threshold for its default false-alarm budget.
- Each run is replayed from its first row through the daemon's detector with
  default settings at that calibrated threshold; the first 400 rows warm the
  stream up and are not judged.
- The last-value forecaster runs through the same scorer as the baseline
  (residual scales from the same training rows).

Published SKAB results for reference (all of SKAB, not only valve2):
Conv-AE F1 0.78 (FAR 13.6%, MAR 28.0%), LSTM-AE 0.74 (30.0%, 25.9%),
vanilla LSTM 0.54 (12.5%, 59.5%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamlstm import evaluation as E
from streamlstm.detector import Detector, DetectorConfig
from streamlstm.io.tabular import read_events
from streamlstm.model import Model
from streamlstm.model.baselines import last_value_model
from streamlstm.training.trainer import TrainConfig, train_model

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "skab-valve2"
FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
LEARN_ROWS = 400


def standardise(x: np.ndarray) -> np.ndarray:
    """Per-stream normalisation from the stream's first LEARN_ROWS rows."""
    ref = x[:LEARN_ROWS]
    mean = np.nanmean(ref, axis=0)
    std = np.nanstd(ref, axis=0)
    std = np.where(std > 0, std, 1.0)
    return (x - mean) / std


def load(data: Path, raw: bool = False) -> tuple[list, tuple]:
    """Runs and the anomaly-free run, standardised per run (or raw, ``raw=True``)."""
    prep = (lambda x: x) if raw else standardise
    runs = []
    for i in range(4):
        p = data / f"{i}.csv"
        ev, _ = read_events(p, FEATURES, time="datetime", sep=";", keep=["anomaly"])
        lab = np.array([float(v) > 0.5 for v in ev.extra["anomaly"]])
        runs.append((f"run{i}", ev.times, prep(ev.x), lab))
    free, _ = read_events(data / "anomaly-free.csv", FEATURES, time="datetime", sep=";")
    return runs, ("anomaly-free", free.times, prep(free.x))


def training_events(runs: list, free: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = [free[0]] * len(free[1])
    times, xs = [free[1]], [free[2]]
    for key, t, x, _ in runs:
        keys += [key] * LEARN_ROWS
        times.append(t[:LEARN_ROWS])
        xs.append(x[:LEARN_ROWS])
    return np.asarray(keys, dtype=object), np.concatenate(times), np.concatenate(xs)


def fit(kind: str, runs: list, free: tuple, args: argparse.Namespace) -> Model:
    keys, times, x = training_events(runs, free)
    cfg = TrainConfig(hidden=args.hidden, epochs=args.epochs, seed=args.seed, progress=False,
                      stream_norm=args.stream_norm, norm_window=args.norm_window)  # fmt: skip
    model, report = train_model(keys, times, x, FEATURES, cfg, detector_config=detector_config())
    print(report.summary())
    if kind == "lstm":
        return model
    lv = last_value_model(FEATURES, model.norm_mean, model.norm_std)
    lv = lv.with_stream_norm(model.stream_norm, model.norm_window)
    r = np.concatenate(
        [
            np.diff(lv.stream_inputs(x[keys == k]).astype(np.float64), axis=0)
            for k in dict.fromkeys(keys.tolist())
        ]
    )
    return lv.with_calibration(E.robust_scale(r), model.threshold)


DETECTOR = {"default": {}, "absolute": {"stream_scale": False, "smooth": 30}}
_detector = "default"


def detector_config() -> DetectorConfig:
    """The detector's defaults, or the ``--detector absolute`` variant: calibrated
    residuals scored as a chi-square tail probability, error smoothed over 30 events."""
    return DetectorConfig(**DETECTOR[_detector])


def evaluate(model: Model, runs: list) -> E.Replay:
    parts = []
    for key, t, x, lab in runs:
        keys = np.asarray([key] * len(t), dtype=object)
        judged = np.arange(len(t)) >= LEARN_ROWS
        det = Detector(model, detector_config())
        parts.append(E.replay(det, keys, t, x, labels=lab, judged=judged))
    return E.merge_replays(parts)


def far_threshold(model: Model, runs: list, free: tuple, budget: float, which: str) -> float:
    """Lowest open threshold whose alerts flag at most ``budget`` of the validation rows.

    Validation rows are the trainer's: the last 20% of each training stream
    (rows 320-400 of each run; with ``which == "all"`` also the last 20% of
    the anomaly-free run), each replayed from the stream's start. They are
    all normal, so this is a point-wise false-alarm budget, and no label is
    looked at.
    """
    keys, times, x = training_events(runs, free)
    parts = []
    for k in dict.fromkeys(keys.tolist()):
        if which == "runs" and k == free[0]:
            continue
        i = np.flatnonzero(keys == k)
        n = i.shape[0]
        judged = np.arange(n) >= int(0.8 * n)
        det = Detector(model, detector_config())
        parts.append(
            E.replay(det, keys[i], times[i], x[i], labels=np.zeros(n, bool), judged=judged)
        )
    val = E.merge_replays(parts)
    grid = np.unique(np.r_[E.sweep_thresholds(val, 60), np.linspace(0.5, 1 - 1e-5, 200)])
    for thr in grid:
        if E.quality(val, *E.replay_alerts(val, float(thr)))[0].far <= budget:
            return float(thr)
    return 1.0 - 1e-7


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SKAB_DATA", DEFAULT_DATA)))
    ap.add_argument("--forecaster", choices=["lstm", "last-value", "both"], default="both")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detector", choices=sorted(DETECTOR), default="default")
    ap.add_argument("--threshold", type=float, help="open threshold (default: calibrated)")
    ap.add_argument(
        "--far-budget",
        type=float,
        help="instead: the lowest threshold flagging at most this share of the "
        "(normal) validation rows",
    )
    ap.add_argument(
        "--far-validation",
        choices=["runs", "all"],
        default="runs",
        help="validation rows for --far-budget: the runs' rows 320-400, or also "
        "the anomaly-free run's last 20%%",
    )
    ap.add_argument(
        "--stream-norm",
        choices=["off", "warmup", "ewm"],
        default="off",
        help="per-stream normalisation in the trainer and detector instead of the "
        "script standardising each run with its first 400 rows (default: off, the script does)",
    )
    ap.add_argument("--norm-window", type=int, default=256, help="events of --stream-norm")
    ap.add_argument("--raw", action="store_true",
                    help="no standardisation by the script even with --stream-norm off "
                    "(what a daemon without per-stream normalisation sees)")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    global _detector
    _detector = args.detector
    runs, free = load(args.data, raw=args.raw or args.stream_norm != "off")
    out = {}
    kinds = ["lstm", "last-value"] if args.forecaster == "both" else [args.forecaster]
    for kind in kinds:
        t0 = time.perf_counter()
        model = fit(kind, runs, free, args)
        if args.threshold is not None:
            model = model.with_calibration(model.resid_scale, args.threshold, model.calibration)
        elif args.far_budget is not None:
            thr = far_threshold(model, runs, free, args.far_budget, args.far_validation)
            model = model.with_calibration(model.resid_scale, thr, model.calibration)
        rep = evaluate(model, runs)
        secs = time.perf_counter() - t0
        total, per = E.quality(rep)
        print(f"\n### {kind} forecaster (threshold {rep.open_threshold:.4g})\n")
        print("| run | F1 | FAR | MAR | precision | recall |")
        print("|---|---|---|---|---|---|")
        for k, q in [*per.items(), ("**all**", total)]:
            print(
                f"| {k} | {q.point_f1:.3f} | {q.far:.1%} | {q.mar:.1%} | "
                f"{q.point_precision:.3f} | {q.point_recall:.3f} |"
            )
        best = E.best_point(E.sweep(rep), pointwise=True)
        if best is not None:
            b = best.quality
            print(
                f"\nin hindsight, the best single threshold {best.threshold:.4g} gives F1 "
                f"{b.point_f1:.3f} (FAR {b.far:.1%}, MAR {b.mar:.1%})"
            )
        print(f"({secs:.1f} s including training)")
        out[kind] = {
            "threshold": rep.open_threshold,
            "overall": total.summary(),
            "runs": {k: q.summary() for k, q in per.items()},
            "best_threshold": None if best is None else best.threshold,
            "best": None if best is None else best.quality.summary(),
            "seconds": secs,
        }
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
