"""Same residuals, different scorers: NAB realKnownCause with the last-value forecaster.

    .venv/bin/python benchmarks/scorer_ablation.py

Each series: last-value forecaster normalised and residual-scaled on its
first 15%, judged on the rest (as benchmarks/quality_nab.py). The forecasts
are identical for every row; only the scorer differs:

- ``relative-max`` (the detector's default since this change): smoothed error
  over the stream's decaying recent maximum, u / (1 + u), open 0.7;
- ``absolute``: the detector with ``stream_scale=False`` (calibrated residuals
  as a chi-square tail probability), open 0.999;
- ``previous``: the scorer the detector had before (error over the stream's
  running *mean* error, learnt only while closed and below the open
  threshold, EWMA smoothing of the ratio, Wilson-Hilferty chi-square map),
  re-implemented here with its own alert machine, open 0.999, at its old
  defaults (smooth 1, scale_window 500) and with smooth 3.

For each: windows caught, false alerts, window F1 at the default threshold,
and the best window F1 of any threshold in hindsight. (For ``previous`` the
hindsight column is approximate: that scorer learnt from events below the
open threshold, so its scores at another threshold would differ slightly.)
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_nab import DEFAULT_DATA, LEARN_FIRST, load  # noqa: E402

from streamlstm import evaluation as E  # noqa: E402
from streamlstm.detector import DetectorConfig  # noqa: E402


@njit(cache=False)
def _previous_scorer(e, warmup, open_thr, close_thr, close_run, window, smooth_a, min_scale):
    """The pre-change kernel scorer + alert machine for one stream (e: errors, NaN = none)."""
    n = e.shape[0]
    score = np.full(n, np.nan)
    scale = 0.0
    n_s = 0
    sm = 0.0
    scored = 0
    in_alert = False
    below = 0
    for i in range(n):
        if math.isnan(e[i]):
            continue
        if n_s == 0:
            scale = max(e[i], min_scale)
        ratio = e[i] / scale
        sm = ratio if scored == 0 else sm + smooth_a * (ratio - sm)
        scored += 1
        q9 = 2.0 / 9.0
        s = 0.5 * (1.0 + math.erf(((sm ** (1 / 3) - (1 - q9)) / math.sqrt(q9)) / math.sqrt(2.0)))
        s = np.float32(s)
        score[i] = s
        if s < open_thr and not in_alert:
            n_s += 1
            a = max(1.0 / n_s, 1.0 / window)
            scale = max(scale + a * (e[i] - scale), min_scale)
        if not in_alert:
            if i >= warmup and s >= open_thr:
                in_alert = True
                below = 0
        else:
            below = below + 1 if s < close_thr else 0
            if below >= close_run:
                in_alert = False
                below = 0
    return score


def main() -> int:
    windows, series = load(DEFAULT_DATA)
    reps = {"relative-max": [], "absolute": [], "previous": [], "previous smooth 3": []}
    for key, times, x in series:
        keys = np.asarray([key] * len(times), dtype=object)
        judged = E.judged_mask(keys, LEARN_FIRST)
        models = E.learn_first_models(keys, times, x, ["value"], LEARN_FIRST, baseline=True)
        rel = E.replay_per_stream(
            models,
            keys,
            times,
            x,
            DetectorConfig(),
            windows=windows,
            judged=judged,
            keep_forecast=True,
        )
        reps["relative-max"].append(rel)
        absolute = DetectorConfig(stream_scale=False)
        reps["absolute"].append(
            E.replay_per_stream(models, keys, times, x, absolute, windows=windows, judged=judged)
        )
        m = models[key]
        r = (m.normalise(x) - m.normalise(rel.forecast)).astype(np.float64) / m.resid_scale
        e = r[:, 0] ** 2
        for name, smooth in (("previous", 1), ("previous smooth 3", 3)):
            cfg = DetectorConfig(open_threshold=0.999, smooth=smooth)
            s = _previous_scorer(
                e,
                cfg.warmup,
                0.999,
                0.99,
                cfg.close_run,
                500.0,
                2.0 / (smooth + 1.0),
                cfg.min_scale,
            )
            reps[name].append(
                replace(
                    rel,
                    score=s.astype(np.float32),
                    config=cfg,
                    open_threshold=0.999,
                    close_threshold=0.99,
                    info={},
                )
            )
    print("| scorer | threshold | caught | false alerts | window F1 | best F1 (hindsight) |")
    print("|---|---|---|---|---|---|")
    for name, parts in reps.items():
        rep = E.merge_replays(parts)
        thr = rep.open_threshold
        alert, trans = E.replay_alerts(rep, thr)
        q, _ = E.quality(rep, alert, trans)
        best = E.best_point(E.sweep(rep))
        bf = "-" if best is None else f"{best.quality.f1:.3f} @ {best.threshold:.4g}"
        print(
            f"| {name} | {thr:g} | {q.caught}/{q.windows} | {q.false_alerts} | {q.f1:.3f} | {bf} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
