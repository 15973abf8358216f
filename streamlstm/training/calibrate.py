"""Calibration from held-out data: residual scales and an alert threshold for a budget.

1. ``resid_scale[f]`` = robust standard deviation (1.4826 x MAD) of the
   normalised one-step residuals of feature ``f`` on the validation part of
   every stream (the training part when nothing is held out). The detector
   divides residuals by it, so a typical error scores like a unit normal
   draw whatever the feature.
2. The default open threshold: the validation data, assumed normal, is run
   through :class:`streamlstm.detector.Detector` (the daemon's engine, with
   the detector settings it will run with), each stream starting
   ``context`` events before its validation part so state and running scale
   are warm. The threshold is the lowest one whose number of alert
   *openings* inside the validation parts is within the budget:
   ``false_alarms_per_week x`` (total stream-weeks of validation data),
   i.e. the budget holds for the average stream. Candidates are swept by
   replaying the recorded scores through the alert machine
   (:mod:`streamlstm.kernels.alerts`), and the winner is confirmed by a real
   detector run (the running scale learns only below the open threshold, so
   a replay is exact only up to that). When even the highest threshold
   exceeds the budget it is kept and ``attained`` is False.
3. Too little validation data to see the budget (fewer than
   :data:`MIN_OBSERVABLE` allowed openings, e.g. one alert a week budgeted
   on two days of data): zero openings on it proves little, so the
   threshold is at least a *nominal* one. With the detector's
   stream-relative scores (``stream_scale``, scores ``u / (1 + u)``) that
   is the detector's default open threshold; with absolute scores (tail
   probabilities of a calibrated residual) it is ``1 - budget / events per
   stream-week``, since every opening needs at least one exceedance.
4. Data that allow less than one opening (:data:`MIN_ALLOWED`): no threshold
   is calibrated (``threshold`` None, a ``reason`` says why); the detector's
   default open threshold stands.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.kernels import layout as KL
from streamlstm.kernels import train as KT
from streamlstm.model import Model
from streamlstm.training.data import Prepared, Stream
from streamlstm.training.forecast import run_streams

WEEK_S = 7 * 86_400.0
MIN_RESID_SCALE = 1e-3  # normalised units; a perfectly predicted feature must not divide by ~0
MAX_THRESHOLD = 1.0 - 1e-7  # float32 scores cannot resolve more than this below 1
_MAD_TO_STD = 1.4826
MIN_OBSERVABLE = 5.0  # allowed openings below which the nominal tail bound also applies
MIN_ALLOWED = 1.0  # allowed openings below which nothing is calibrated (the default stands)


def robust_std(r: np.ndarray) -> np.ndarray:
    """Per column 1.4826 * median absolute deviation, ignoring NaN. r : (n, F)."""
    med = np.nanmedian(r, axis=0)
    return _MAD_TO_STD * np.nanmedian(np.abs(r - med), axis=0)


def residual_scale(
    model: Model, data: Prepared, context: int, chunk: int = 8
) -> tuple[np.ndarray, str, int]:
    """(resid_scale (F,), source, n residuals) from held-out (else training) forecasts."""
    net = KT.Net(model.cell, model.arrays(), model.delta)
    held = [s for s in data.streams if s.n_train < s.n]
    source = "validation"
    if held:
        streams, first = held, [s.n_train for s in held]
    else:
        streams, first, source = data.streams, [1] * len(data.streams), "training"
    res = run_streams(net, [s.xn for s in streams], first, context, keep_preds=True, chunk=chunk,
                      targets=[s.targets() for s in streams])  # fmt: skip
    n_feat = data.n_features
    parts = []
    assert res.preds is not None
    for s, ft, a, p in zip(streams, first, res.starts, res.preds, strict=True):
        tgt = s.targets()[a:]
        k = max(0, ft - (a + 1))
        parts.append(tgt[k:] - p[k:])
    r = np.concatenate(parts) if parts else np.zeros((0, n_feat), np.float32)
    if r.shape[0] == 0 or np.all(np.isnan(r)):
        return np.ones(n_feat, np.float32), "none", 0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN feature: scale 1 below
        scale = robust_std(r.astype(np.float64))
    scale = np.where(np.isfinite(scale), np.maximum(scale, MIN_RESID_SCALE), 1.0)
    return scale.astype(np.float32), source, int(np.sum(~np.isnan(r)))


class _Recorded:
    """Scores of one detector pass over the validation streams (with context)."""

    def __init__(self, model: Model, streams: list[Stream], starts: list[int],
                 cfg: DetectorConfig, batch: int = 8192,
                 stream_stats: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        keys, times, xs, judged, slots = [], [], [], [], []
        for i, (s, a) in enumerate(zip(streams, starts, strict=True)):
            n = s.n - a
            keys += [s.key] * n
            times.append(s.times[a:])
            xs.append(s.x[a:])
            judged.append(np.arange(a, s.n) >= s.n_train)
            slots.append(np.full(n, i, np.int64))
        self.keys = keys
        self.times = np.concatenate(times)
        self.x = np.concatenate(xs)
        self.judged = np.concatenate(judged)
        self.slots = np.concatenate(slots)
        self.n_slots = len(streams)
        self.cfg = cfg
        self.model = model
        self.batch = batch
        self.stream_stats = stream_stats or {}
        self.score = np.empty(len(keys), np.float32)
        self.hold = np.empty(len(keys), np.float32)
        self.outcome = np.empty(len(keys), np.int8)

    def run(self, open_thr: float) -> int:
        """A real detector pass at ``open_thr``; records scores, returns judged openings."""
        close = self.cfg.close_threshold
        cfg = replace(
            self.cfg,
            open_threshold=open_thr,
            close_threshold=None if close is None else min(close, open_thr),
        )
        det = Detector(self.model, cfg)
        if self.stream_stats and "nstat" in det.table.arrays:
            # the statistics the training data was normalised from (fine-tuning)
            seeded = list(self.stream_stats)
            slots = det.table.slots_for(seeded)
            det.table.arrays["nstat"][slots] = np.stack([self.stream_stats[k] for k in seeded])
        opened = 0
        for a in range(0, len(self.keys), self.batch):
            b = min(len(self.keys), a + self.batch)
            res = det.process_many(self.keys[a:b], self.times[a:b], self.x[a:b])
            self.score[a:b] = res.score
            self.hold[a:b] = res.hold
            self.outcome[a:b] = res.outcome
            opened += int(np.sum((res.transition == KL.OPENED) & self.judged[a:b]))
        return opened

    def replay(self, open_thr: float) -> int:
        """Judged openings at ``open_thr`` from the recorded scores (alert machine only)."""
        _, out_trans = self.cfg.replay_alerts(
            self.slots, self.times, self.score, self.outcome, open_thr, self.n_slots, self.hold
        )
        return int(np.sum((out_trans == KL.OPENED) & self.judged))


def choose_threshold(
    model: Model,
    data: Prepared,
    false_alarms_per_week: float | None,
    detector_config: DetectorConfig | None = None,
    context: int = 256,
    false_alarms_per_day: float | None = None,
) -> dict[str, Any]:
    """Pick the open threshold for the budget (see the module doc); returns the info dict.

    ``false_alarms_per_day`` (when given) is a budget for the whole pipeline: the
    openings of every stream together, per day of the validation period (from
    the first held-out event of any stream to the last); otherwise
    ``false_alarms_per_week`` per stream, per week of each stream's data.
    """
    cfg = detector_config or DetectorConfig()
    held = [s for s in data.streams if s.n_train < s.n]
    if not held:
        return {"threshold": None, "reason": "no validation data to calibrate a threshold on"}
    ctx = max(context, cfg.warmup + 1, min(cfg.scale_window, 1000))
    if cfg.stream_norm_for(model)[0] != "off":
        # Per-stream normalisation learns from a stream's first events: replay each
        # stream from its start, or the detector would learn other statistics.
        ctx = max(s.n for s in held)
    starts = [max(0, s.n_train - ctx) for s in held]
    weeks = 0.0
    for s in held:
        t = s.times[s.n_train :]
        # n events cover n - 1 intervals; count one more so one event is one interval
        step = float(np.median(np.diff(t))) if t.shape[0] > 1 else 0.0
        weeks += (float(t[-1] - t[0]) + step) / WEEK_S
    t0 = min(float(s.times[s.n_train]) for s in held)
    t1 = max(float(s.times[-1]) for s in held)
    days = (t1 - t0) / 86_400.0
    if false_alarms_per_day is not None:
        allowed = false_alarms_per_day * days
        budget = f"{false_alarms_per_day:g} false alarm(s)/day for the pipeline"
        cover = f"{days:.3g} days"
        need = f"{MIN_ALLOWED / max(false_alarms_per_day, 1e-300):.3g} days"
    else:
        assert false_alarms_per_week is not None
        allowed = false_alarms_per_week * weeks
        budget = f"{false_alarms_per_week:g} false alarm(s)/stream/week"
        cover = f"{weeks:.3g} stream-weeks"
        need = f"{MIN_ALLOWED / max(false_alarms_per_week, 1e-300):.3g} stream-weeks"
    info: dict[str, Any] = {
        "false_alarms_per_week": false_alarms_per_week,
        "false_alarms_per_day": false_alarms_per_day,
        "budget": budget,
        "validation_days": days,
        "stream_weeks": weeks,
        "allowed": allowed,
        "n_streams": len(held),
        "scorer": cfg.scorer,
        "detector": cfg.as_dict(),
    }
    if allowed < MIN_ALLOWED:
        # Data that allow less than one opening cannot show the budget: zero openings on
        # them prove nothing, and one would push the threshold to whatever silences that
        # short stretch (SKAB: 0.003 stream-weeks chose 0.65, above every fault's score).
        reason = (
            f"the held-out data cover {cover}, too short to see a budget of {budget} "
            f"(that needs {need}); the detector's default open threshold "
            f"{cfg.default_open():g} is used instead"
        )
        return {"threshold": None, "reason": reason, **info,
                "default_threshold": cfg.default_open()}  # fmt: skip
    rec = _Recorded(model, held, starts, cfg, stream_stats=data.stream_stats)
    open0 = cfg.open_threshold or cfg.default_open()
    first = rec.run(open0)
    sc = rec.score[rec.judged & np.isfinite(rec.score)].astype(np.float64)
    cands = [open0, MAX_THRESHOLD]
    cands += np.linspace(0.5, 0.9, 41).tolist()  # u / (1 + u) scores live here
    cands += (1.0 - np.logspace(-1, -7, 61)).tolist()
    if sc.size:
        cands += np.quantile(sc, 1.0 - np.logspace(-6, -0.5, 60)).tolist()
    grid = np.unique(np.clip(np.asarray(cands), 0.5, MAX_THRESHOLD))
    openings = {float(t): rec.replay(float(t)) for t in grid}
    ok = [t for t in grid if openings[float(t)] <= allowed]
    chosen = float(ok[0]) if ok else MAX_THRESHOLD
    n_judged = int(rec.judged.sum())
    nominal = None
    if allowed < MIN_OBSERVABLE and n_judged:
        if cfg.scorer == "regime" or cfg.stream_scale:
            # Scores are u / (1 + u), u = error / the stream's recent maximum, not tail
            # probabilities: the detector's default is the nominal threshold then.
            nominal = cfg.default_open()
        else:
            # every opening needs an exceedance: at most `allowed` of the judged events
            nominal = float(min(MAX_THRESHOLD, max(0.5, 1.0 - allowed / n_judged)))
    if nominal is not None and nominal > chosen:
        chosen = float(grid[min(int(np.searchsorted(grid, nominal)), len(grid) - 1)])
    # Confirm with a real pass; step up the grid while the budget is exceeded.
    idx = int(np.searchsorted(grid, chosen))
    real = rec.run(chosen)
    tries = 1
    while real > allowed and idx + 1 < len(grid) and tries < 8:
        idx += 1
        chosen = float(grid[idx])
        real = rec.run(chosen)
        tries += 1
    return {
        "threshold": chosen,
        **info,
        "openings": real,
        "openings_at_default": first,
        "default_threshold": open0,
        "attained": bool(real <= allowed),
        "n_judged_events": n_judged,
        "nominal_threshold": nominal,
    }


def calibrate(
    model: Model,
    data: Prepared,
    false_alarms_per_week: float | None = 1.0,
    detector_config: DetectorConfig | None = None,
    context: int = 256,
    chunk: int = 8,
    false_alarms_per_day: float | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Residual scales, then (if a budget is given) the threshold; both stored in the model.

    ``false_alarms_per_day``: a budget for the whole pipeline (all streams together),
    used instead of ``false_alarms_per_week`` per stream when given."""
    scale, source, n_res = residual_scale(model, data, context, chunk)
    info: dict[str, Any] = {
        "resid_source": source,
        "n_residuals": n_res,
        "resid_scale": [float(v) for v in scale],
    }
    model = model.with_calibration(scale, None, info)
    threshold = None
    if false_alarms_per_week is not None or false_alarms_per_day is not None:
        thr_info = choose_threshold(
            model, data, false_alarms_per_week, detector_config, context, false_alarms_per_day
        )
        info.update(thr_info)
        threshold = thr_info.get("threshold")
    if threshold is not None and not (0.0 < threshold < 1.0 and math.isfinite(threshold)):
        threshold = None
    return model.with_calibration(scale, threshold, info), info
