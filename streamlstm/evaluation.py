"""Detection quality on labelled data: replay through the detector, match, sweep.

``streamlstm evaluate`` and the benchmarks use this module; the report
(text table, HTML/PNG) is :mod:`streamlstm.evaluation_report`.

Conventions (NAB's, written down here because every number depends on them)
--------------------------------------------------------------------------
- A *labelled window* ``[start, end]`` (event times, both inclusive) surrounds
  one incident. A per-row 0/1 label column is turned into windows: each run
  of consecutive 1-rows of a stream is one window from its first to its last
  row.
- Only *judged* events count: with ``learn_first`` the first share of every
  stream is for learning and is not judged. A window counts when it ends at
  or after the stream's first judged event.
- An **alert** is an opening of the detector's alert machine (the
  ``opened`` transition). An alert that opens inside a window (on a judged
  event) is a detection; the window is **caught** by its first one, and the
  **time to detect** is that alert's time minus the window's start (so
  earlier in the window is better). An alert that opens outside every window
  is a **false alert**. A window no alert opens in is **missed**. An alert
  already open when a window starts does not catch it: the daemon would not
  page again.
- Window-level precision = caught / (caught + false alerts), recall =
  caught / windows.
- **Point-wise** metrics compare the per-event alert flag (stream in alert
  after the event) with the per-event label (inside a window) over judged
  events: precision, recall, F1, false-alarm rate FAR = FP / (FP + TN),
  missed-alarm rate MAR = FN / (FN + TP) (SKAB's definitions).
- **False alerts per day** = false alerts / judged days, where judged days is
  the sum over streams of (last judged time - first judged time) / 86400.

Threshold sweep
---------------
The scorer learns nothing from the thresholds (see
:mod:`streamlstm.kernels.detect`), so scores recorded once are the scores of
every threshold, and only the cheap alert machine has to run again per
threshold (:func:`streamlstm.kernels.alerts._alert_replay`): exactly what a
full re-run would give (a test checks it), at a few ns per event.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.detector import REJECTED, Detector, DetectorConfig
from streamlstm.errors import InputError
from streamlstm.kernels import alerts as A
from streamlstm.kernels import detect as K
from streamlstm.tabular import stream_name_for

DAY = 86_400.0
Window = tuple[float, float]
log = logging.getLogger(__name__)


# -- labels -------------------------------------------------------------------------
def parse_time(v: Any, where: str = "labels") -> float:
    """A time as epoch seconds: a number, or ISO-8601 text (no zone = UTC, as tabular)."""
    if isinstance(v, bool):
        raise InputError(f"{where}: {v!r} is not a time")
    if isinstance(v, int | float):
        if math.isfinite(v):
            return float(v)
    elif isinstance(v, str) and v.strip():
        s = v.strip()
        try:
            return float(s)
        except ValueError:
            pass
        try:
            d = _dt.datetime.fromisoformat(s)
        except ValueError:
            pass
        else:
            if d.tzinfo is None:
                d = d.replace(tzinfo=_dt.UTC)
            return d.timestamp()
    raise InputError(
        f"{where}: cannot read the time {v!r}; expected epoch seconds or ISO-8601 "
        "such as '2024-05-01 12:00:00'"
    )


def load_windows(path: str | os.PathLike[str]) -> dict[str, list[Window]]:
    """Read a JSON file ``{stream: [[start, end], ...]}`` into sorted windows in seconds."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: labels file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON: {exc}") from exc
    return parse_windows(doc, where=str(p))


def parse_windows(doc: Any, where: str = "labels") -> dict[str, list[Window]]:
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: expected a JSON object {{stream: [[start, end], ...]}}, "
            f"found {type(doc).__name__}"
        )
    out: dict[str, list[Window]] = {}
    for key, spans in doc.items():
        if not isinstance(spans, list):
            raise InputError(f"{where}: {key!r}: expected a list of [start, end] pairs")
        ws: list[Window] = []
        for i, span in enumerate(spans):
            at = f"{where}: {key!r}[{i}]"
            if not isinstance(span, list | tuple) or len(span) != 2:
                raise InputError(f"{at}: expected [start, end], found {span!r}")
            a, b = parse_time(span[0], at), parse_time(span[1], at)
            if b < a:
                raise InputError(f"{at}: end {span[1]!r} is before start {span[0]!r}")
            ws.append((a, b))
        out[str(key)] = sorted(ws)
    return out


def windows_from_flags(times: np.ndarray, flags: np.ndarray) -> list[Window]:
    """Runs of consecutive true ``flags`` (one stream, in time order) -> [first, last] times."""
    f = np.asarray(flags, bool)
    if not f.any():
        return []
    edges = np.diff(np.r_[0, f.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True)]


def match_label_keys(
    stream_keys: Sequence[str], windows: Mapping[str, list[Window]]
) -> dict[str, list[Window]]:
    """Windows per stream key; a label key also matches by file name (``x.csv`` -> ``x``).

    NAB's windows.json is keyed by file name while a file without a key column
    is one stream named after the file without its suffix.
    """
    by_name = {stream_name_for(k): v for k, v in windows.items()}
    out: dict[str, list[Window]] = {}
    for k in stream_keys:
        if k in windows:
            out[k] = list(windows[k])
        elif k in by_name:
            out[k] = list(by_name[k])
        else:
            out[k] = []
    return out


def label_points(times: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """(n,) bool: event time inside any window (inclusive)."""
    lab = np.zeros(times.shape[0], bool)
    for a, b in windows:
        lab |= (times >= a) & (times <= b)
    return lab


# -- replay -------------------------------------------------------------------------
@dataclass
class Replay:
    """Per-event results of replaying events through a detector, in replay order.

    keys (n) str, times (n,) float64, x (n, F) raw features, score (n,)
    float32, alert (n,) bool, transition (n,) int8, outcome (n,) int8, judged
    (n,) bool, label (n,) bool; ``windows`` per stream key; ``config`` and
    ``open_threshold`` / ``close_threshold`` are what the detector ran with.
    """

    keys: np.ndarray
    times: np.ndarray
    x: np.ndarray
    score: np.ndarray
    alert: np.ndarray
    transition: np.ndarray
    outcome: np.ndarray
    judged: np.ndarray
    label: np.ndarray
    windows: dict[str, list[Window]]
    features: tuple[str, ...]
    config: DetectorConfig
    open_threshold: float
    close_threshold: float
    forecast: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def _groups(self) -> dict[str, np.ndarray]:
        """Stream key -> its event indices (in replay order), in order of first appearance."""
        cached = self.info.get("_groups")
        if cached is None or sum(len(v) for v in cached.values()) != len(self):
            uniq, first, inv = np.unique(self.keys, return_index=True, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=uniq.shape[0]))]
            by_first = np.argsort(first, kind="stable")
            cached = {str(uniq[g]): order[bounds[g] : bounds[g + 1]] for g in by_first}
            self.info["_groups"] = cached
        return cached

    def stream_keys(self) -> list[str]:
        """Stream keys in order of first appearance."""
        return list(self._groups())

    def stream_index(self, key: str) -> np.ndarray:
        return self._groups()[key]


def judged_mask(keys: np.ndarray, learn_first: float) -> np.ndarray:
    """(n,) bool: False on the first ``ceil(learn_first * n_s)`` events of every stream."""
    judged = np.ones(keys.shape[0], bool)
    if learn_first <= 0:
        return judged
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    rank = np.empty(keys.shape[0], np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(keys.shape[0]) - np.repeat(starts, counts)
    n_learn = np.ceil(learn_first * counts).astype(np.int64)
    judged[rank < n_learn[inv]] = False
    return judged


def replay(
    detector: Detector,
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    *,
    windows: Mapping[str, list[Window]] | None = None,
    labels: np.ndarray | None = None,
    judged: np.ndarray | None = None,
    chunk: int = 8192,
    keep_forecast: bool = False,
) -> Replay:
    """Run events (in the given order) through ``detector`` in micro-batches of ``chunk``.

    Labels come from ``windows`` (per stream key; see :func:`match_label_keys`)
    or from per-event 0/1 ``labels``, which are turned into windows.
    """
    keys_a = np.asarray(keys, dtype=object)
    n = keys_a.shape[0]
    times = np.asarray(times, np.float64)
    x = np.asarray(x, np.float64)
    score = np.empty(n, np.float32)
    alert = np.empty(n, bool)
    trans = np.empty(n, np.int8)
    outcome = np.empty(n, np.int8)
    fc = np.empty((n, x.shape[1]), np.float32) if keep_forecast else None
    key_list = keys_a.tolist()
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        res = detector.process_many(key_list[a:b], times[a:b], x[a:b])
        score[a:b] = res.score
        alert[a:b] = res.alert
        trans[a:b] = res.transition
        outcome[a:b] = res.outcome
        if fc is not None:
            fc[a:b] = res.forecast
    uniq = list(dict.fromkeys(key_list))
    if labels is not None:
        lab = np.asarray(labels, bool)
        if lab.shape != (n,):
            raise InputError(f"labels have shape {lab.shape}, expected ({n},)")
        win = {}
        for k in uniq:
            idx = np.flatnonzero(keys_a == k)
            win[k] = windows_from_flags(times[idx], lab[idx])
    else:
        win = match_label_keys(uniq, windows or {})
        lab = np.zeros(n, bool)
        for k in uniq:
            if win[k]:
                idx = np.flatnonzero(keys_a == k)
                lab[idx] = label_points(times[idx], win[k])
    return Replay(
        keys=keys_a,
        times=times,
        x=x,
        score=score,
        alert=alert,
        transition=trans,
        outcome=outcome,
        judged=np.ones(n, bool) if judged is None else np.asarray(judged, bool),
        label=lab,
        windows=win,
        features=tuple(detector.model.features),
        config=detector.config,
        open_threshold=detector.open_threshold,
        close_threshold=detector.close_threshold,
        forecast=fc,
    )


# -- metrics ------------------------------------------------------------------------
@dataclass
class Quality:
    """Detection quality of one stream or of all of them (see the module docstring)."""

    windows: int = 0
    caught: int = 0
    false_alerts: int = 0
    alerts: int = 0
    ttd: list[float] = field(default_factory=list)  # seconds, one per caught window
    judged_days: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def missed(self) -> int:
        return self.windows - self.caught

    @property
    def precision(self) -> float:
        return _ratio(self.caught, self.caught + self.false_alerts)

    @property
    def recall(self) -> float:
        return _ratio(self.caught, self.windows)

    @property
    def f1(self) -> float:
        return _f1(self.precision, self.recall)

    @property
    def point_precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def point_recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def point_f1(self) -> float:
        return _f1(self.point_precision, self.point_recall)

    @property
    def far(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float:
        return _ratio(self.fn, self.fn + self.tp)

    @property
    def false_per_day(self) -> float:
        return self.false_alerts / self.judged_days if self.judged_days > 0 else math.nan

    @property
    def median_ttd(self) -> float:
        return float(np.median(self.ttd)) if self.ttd else math.nan

    def __iadd__(self, o: Quality) -> Quality:
        self.windows += o.windows
        self.caught += o.caught
        self.false_alerts += o.false_alerts
        self.alerts += o.alerts
        self.ttd += o.ttd
        self.judged_days += o.judged_days
        self.tp += o.tp
        self.fp += o.fp
        self.fn += o.fn
        self.tn += o.tn
        return self

    def summary(self) -> dict[str, float]:
        return {
            "windows": self.windows,
            "caught": self.caught,
            "missed": self.missed,
            "false_alerts": self.false_alerts,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_ttd_s": self.median_ttd,
            "false_per_day": self.false_per_day,
            "point_precision": self.point_precision,
            "point_recall": self.point_recall,
            "point_f1": self.point_f1,
            "far": self.far,
            "mar": self.mar,
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r) or p + r == 0:
        return 0.0 if (p == 0 or r == 0) else math.nan
    return 2 * p * r / (p + r)


def stream_quality(
    times: np.ndarray,
    opened: np.ndarray,
    alert: np.ndarray,
    label: np.ndarray,
    judged: np.ndarray,
    windows: Sequence[Window],
) -> Quality:
    """Quality of one stream from its events in time order (see the module docstring)."""
    q = Quality()
    jt = times[judged]
    if jt.size == 0:
        return q
    q.judged_days = float(jt[-1] - jt[0]) / DAY
    alert_t = times[opened & judged]
    q.alerts = int(alert_t.size)
    inside = np.zeros(alert_t.size, bool)
    for a, b in windows:
        if b < jt[0]:
            continue  # the window is over before judging starts
        q.windows += 1
        hit = (alert_t >= a) & (alert_t <= b)
        inside |= hit
        if hit.any():
            q.caught += 1
            q.ttd.append(float(alert_t[np.argmax(hit)] - a))
    q.false_alerts = int((~inside).sum())
    y, p = label[judged], alert[judged]
    q.tp = int((y & p).sum())
    q.fp = int((~y & p).sum())
    q.fn = int((y & ~p).sum())
    q.tn = int((~y & ~p).sum())
    return q


def quality(
    rep: Replay, alert: np.ndarray | None = None, transition: np.ndarray | None = None
) -> tuple[Quality, dict[str, Quality]]:
    """(overall, per stream) quality of a replay, or of other alert flags / transitions."""
    alert = rep.alert if alert is None else alert
    transition = rep.transition if transition is None else transition
    opened = transition == K.OPENED
    per: dict[str, Quality] = {}
    total = Quality()
    for key in rep.stream_keys():
        idx = rep.stream_index(key)
        q = stream_quality(
            rep.times[idx],
            opened[idx],
            alert[idx],
            rep.label[idx],
            rep.judged[idx],
            rep.windows.get(key, []),
        )
        per[key] = q
        total += q
    return total, per


# -- threshold sweep ----------------------------------------------------------------
def default_close(open_thr: float, config: DetectorConfig) -> float:
    """The close threshold the detector derives for ``open_thr`` (see Detector._set_model)."""
    close = config.close_threshold
    if close is None:
        close = max(0.5, 1.0 - 10.0 * (1.0 - open_thr))
    return float(min(close, open_thr))


def replay_alerts(rep: Replay, open_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(alert, transition) the detector would have produced at ``open_thr``."""
    cfg = rep.config
    cached = rep.info.get("_slots")
    if cached is None or cached[0].shape[0] != len(rep):
        _, slots = np.unique(rep.keys, return_inverse=True)
        accepted = ~np.isin(rep.outcome, np.array(sorted(REJECTED), np.int8))
        cached = (slots.astype(np.int64), accepted)
        rep.info["_slots"] = cached
    slots, accepted = cached
    out_alert = np.empty(len(rep), np.int8)
    out_trans = np.empty(len(rep), np.int8)
    A._alert_replay(
        slots,
        rep.times,
        rep.score,
        accepted,
        int(slots.max(initial=-1) + 1),
        float(open_thr),
        default_close(open_thr, cfg),
        int(cfg.min_run),
        int(cfg.close_run),
        float(cfg.cooldown_s),
        int(cfg.warmup),
        float(cfg.reset_gap_s),
        out_alert,
        out_trans,
    )
    return out_alert.astype(bool), out_trans


def sweep_thresholds(rep: Replay, n: int = 24) -> np.ndarray:
    """Open thresholds worth sweeping: quantiles of the judged scores, plus the one used.

    Spaced in tail probability (1e-5 .. 0.3 of judged events at or above),
    which is where alert thresholds live.
    """
    s = rep.score[rep.judged & np.isfinite(rep.score)].astype(np.float64)
    thr = [rep.open_threshold]
    if s.size:
        tail = np.logspace(-5, math.log10(0.3), n)
        thr += np.quantile(s, 1.0 - tail).tolist()
    out = np.unique(np.clip(np.asarray(thr), 1e-9, 1 - 1e-12))
    return out[(out > 0.0) & (out < 1.0)]


@dataclass
class SweepPoint:
    threshold: float
    quality: Quality


def sweep(rep: Replay, thresholds: Sequence[float] | None = None) -> list[SweepPoint]:
    """Quality at each open threshold, from the recorded scores (no detector re-run)."""
    thr = sweep_thresholds(rep) if thresholds is None else thresholds
    out = []
    for t in thr:
        alert, trans = replay_alerts(rep, float(t))
        total, _ = quality(rep, alert, trans)
        out.append(SweepPoint(float(t), total))
    return out


def best_point(points: Sequence[SweepPoint], pointwise: bool = False) -> SweepPoint | None:
    """The sweep point with the highest (window or point-wise) F1; ties -> higher threshold."""
    best = None
    for p in points:
        f = p.quality.point_f1 if pointwise else p.quality.f1
        if math.isnan(f):
            continue
        if best is None or f >= (best.quality.point_f1 if pointwise else best.quality.f1):
            best = p
    return best


# -- cold start: learn from the first part of each stream -----------------------------
def learn_first_models(
    keys: np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    learn_first: float,
    *,
    init: Any = None,
    train_config: Any = None,
    detector_config: DetectorConfig | None = None,
    baseline: bool = False,
) -> dict[str, Any]:
    """One model per stream, learnt from that stream's first ``learn_first`` share only.

    ``baseline=True`` gives the last-value forecaster (normalisation and
    residual scale from the same share) instead of training an LSTM, for the
    comparison SCORING.md asks for. Otherwise the cold-start learner
    (:func:`streamlstm.training.online.learn_first_part`) trains an LSTM on
    the learning part, calibrated for the detector settings
    ``detector_config`` (its false-alarm budget comes from
    ``train_config``); ``init`` fine-tunes that model instead of starting
    from random weights.
    """
    from streamlstm.baselines import fit_normalisation, last_value_model

    mask = ~judged_mask(keys, learn_first)
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys.tolist()):
        idx = np.flatnonzero((keys == key) & mask)
        if idx.size < 8:
            raise InputError(
                f"stream {key!r}: only {idx.size} events in its first {learn_first:.0%}; "
                "need at least 8 to learn from (raise --learn-first)"
            )
        xs, ts = x[idx], times[idx]
        if baseline:
            mean, std = fit_normalisation(xs)
            m = last_value_model(features, mean, std)
            r = np.diff(m.normalise(xs).astype(np.float64), axis=0)
            scale = _robust_scale(r)
            out[key] = m.with_calibration(scale, None, {"resid_source": "learning part"})
            continue
        out[key] = _learn(key, ts, xs, features, init, train_config, detector_config)
    return out


def _robust_scale(r: np.ndarray) -> np.ndarray:
    """1.4826 MAD per column, floored (a constant feature must not divide by ~0)."""
    med = np.nanmedian(r, axis=0)
    s = 1.4826 * np.nanmedian(np.abs(r - med), axis=0)
    sd = np.nanstd(r, axis=0)
    s = np.where(np.isfinite(s) & (s > 0), s, sd)
    return np.where(np.isfinite(s) & (s > 1e-3), s, 1e-3)


def _learn(
    key: str,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    init: Any,
    train_config: Any,
    detector_config: DetectorConfig | None,
) -> Any:
    """Train (or fine-tune ``init``) and calibrate on one stream's learning part."""
    from streamlstm.training.online import learn_first_part

    log.info("stream %s: learning from its first %d events", key, times.shape[0])
    return learn_first_part(
        [key] * times.shape[0],
        times,
        x,
        features,
        config=train_config,
        init=init,
        detector_config=detector_config,
    )


def replay_per_stream(
    models: Mapping[str, Any],
    keys: np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    config: DetectorConfig,
    **kw: Any,
) -> Replay:
    """Replay every stream through its own detector (one model per stream), then merge.

    Each stream sees all its events (its learning part warms the state up)
    in file order; the merged replay keeps the original event order.
    """
    parts = []
    order = []
    for key, model in models.items():
        idx = np.flatnonzero(keys == key)
        det = Detector(model, config)
        sub: dict[str, Any] = {
            k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in kw.items()
        }
        parts.append(replay(det, keys[idx], times[idx], x[idx], **sub))
        order.append(idx)
    return merge_replays(parts, np.concatenate(order) if order else np.zeros(0, np.int64))


def merge_replays(parts: Sequence[Replay], positions: np.ndarray | None = None) -> Replay:
    """One replay from several (distinct streams); ``positions`` puts events back in order.

    The thresholds are those of the first part; with per-stream calibrated
    models they differ, and ``info["open_thresholds"]`` keeps each stream's.
    """
    if not parts:
        raise InputError("no streams to evaluate")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    inv = None
    if positions is not None:
        inv = np.empty_like(positions)
        inv[positions] = np.arange(positions.shape[0])

    def put(a: np.ndarray) -> np.ndarray:
        return a if inv is None else a[inv]

    windows: dict[str, list[Window]] = {}
    thresholds: dict[str, float] = {}
    for p in parts:
        windows.update(p.windows)
        for k in p.stream_keys():
            thresholds[k] = p.open_threshold
    fc = None
    if all(p.forecast is not None for p in parts):
        fc = put(cat("forecast"))
    first = parts[0]
    return Replay(
        keys=put(cat("keys")),
        times=put(cat("times")),
        x=put(cat("x")),
        score=put(cat("score")),
        alert=put(cat("alert")),
        transition=put(cat("transition")),
        outcome=put(cat("outcome")),
        judged=put(cat("judged")),
        label=put(cat("label")),
        windows=windows,
        features=first.features,
        config=first.config,
        open_threshold=first.open_threshold,
        close_threshold=first.close_threshold,
        forecast=fc,
        info={"open_thresholds": thresholds},
    )
