"""Detection quality on NAB realKnownCause (seven real series with labelled incidents).

    .venv/bin/python benchmarks/quality_nab.py [--data ../shared/data/nab-realKnownCause]
        [--forecaster lstm|last-value|both] [--json out.json]
        [--stream-norm off|warmup|ewm] [--norm-window 256]

NAB's protocol: each series is on its own; the detector learns only from the
first 15% of it (``evaluate --learn-first 0.15``: the cold-start learner of
:mod:`streamlstm.training.online` trains an LSTM on that share and calibrates
the model's alert threshold on its last part, for the default false-alarm
budget) and is judged on the remaining 85%, at the model's own calibrated
threshold, with the detector's default settings. Windows are NAB's: an alert
opening inside a window is a detection (time to detect = opening - window
start), outside every window a false alert.

Reported per series and overall: windows caught / windows, false alerts,
false alerts per day, median time to detect, window-level F1; and, for
information only, the best window F1 any single threshold would have given
in hindsight (not a fair operating point). The last-value forecaster runs
through the same scorer as the baseline (SCORING.md).

Nothing here is tuned per file: the same defaults run every series.

``--stream-norm warmup|ewm`` trains each model for per-stream normalisation
(``TrainConfig.stream_norm``) and the detector applies it (``stream_norm:
model``); the last-value forecaster gets the same. The script never
standardises a series itself.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamlstm import evaluation as E
from streamlstm.detector import DetectorConfig
from streamlstm.io.tabular import read_events
from streamlstm.training.trainer import TrainConfig

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "nab-realKnownCause"
LEARN_FIRST = 0.15


def load(data: Path) -> tuple[dict, list]:
    windows = E.load_windows(data / "windows.json")
    series = []
    for p in sorted(glob.glob(str(data / "*.csv"))):
        ev, _ = read_events(p, ["value"], time="timestamp")
        series.append((ev.keys[0], ev.times, ev.x))
    return windows, series


def run(
    forecaster: str, windows: dict, series: list, seed: int, stream_norm: str = "off",
    norm_window: int = 256,
) -> tuple[E.Replay, float]:  # fmt: skip
    cfg = DetectorConfig()
    parts = []
    t0 = time.perf_counter()
    for key, times, x in series:
        keys = np.asarray([key] * len(times), dtype=object)
        models = E.learn_first_models(
            keys,
            times,
            x,
            ["value"],
            LEARN_FIRST,
            train_config=TrainConfig(
                progress=False, seed=seed, stream_norm=stream_norm, norm_window=norm_window
            ),
            detector_config=cfg,
            baseline=forecaster == "last-value",
        )
        parts.append(
            E.replay_per_stream(
                models,
                keys,
                times,
                x,
                cfg,
                windows=windows,
                judged=E.judged_mask(keys, LEARN_FIRST),
            )
        )
    return E.merge_replays(parts), time.perf_counter() - t0


def table(rep: E.Replay) -> tuple[str, E.Quality, dict]:
    total, per = E.quality(rep)
    thr = rep.info.get("open_thresholds", {})
    lines = [
        "| series | windows caught | false alerts | false/day | median TTD | F1 | threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, q in per.items():
        lines.append(
            f"| {k} | {q.caught}/{q.windows} | {q.false_alerts} | {q.false_per_day:.3f} | "
            f"{_h(q.median_ttd)} | {q.f1:.3f} | {thr.get(k, rep.open_threshold):.4g} |"
        )
    lines.append(
        f"| **all** | **{total.caught}/{total.windows}** ({total.recall:.0%}) | "
        f"**{total.false_alerts}** | {total.false_per_day:.3f} | {_h(total.median_ttd)} | "
        f"**{total.f1:.3f}** | |"
    )
    best = E.best_point(E.sweep(rep))
    extra = {}
    if best is not None:
        extra = {
            "best_threshold": best.threshold,
            "best_f1": best.quality.f1,
            "best_caught": best.quality.caught,
            "best_false": best.quality.false_alerts,
        }
    return "\n".join(lines), total, extra


def _h(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("NAB_DATA", DEFAULT_DATA)))
    ap.add_argument("--forecaster", choices=["lstm", "last-value", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stream-norm", choices=["off", "warmup", "ewm"], default="off",
                    help="per-stream normalisation in the trainer and detector")  # fmt: skip
    ap.add_argument("--norm-window", type=int, default=256, help="events of --stream-norm")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    windows, series = load(args.data)
    out = {}
    kinds = ["lstm", "last-value"] if args.forecaster == "both" else [args.forecaster]
    for kind in kinds:
        rep, secs = run(kind, windows, series, args.seed, args.stream_norm, args.norm_window)
        text, total, extra = table(rep)
        print(f"\n### {kind} forecaster (learn first 15%, default detector, own threshold)\n")
        print(text)
        if extra:
            print(
                f"\nin hindsight, the best single threshold {extra['best_threshold']:.4g} gives "
                f"window F1 {extra['best_f1']:.3f} ({extra['best_caught']} caught, "
                f"{extra['best_false']} false)"
            )
        print(f"({len(rep)} events, {secs:.1f} s)")
        out[kind] = {"overall": total.summary(), **extra, "seconds": secs}
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
