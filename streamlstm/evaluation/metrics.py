"""Window-level and point-wise quality of a replay, per anomaly kind, and the exact sweep.

See :mod:`streamlstm.evaluation` for the definitions. Per kind
(:func:`kind_quality`) only the window numbers exist: windows, caught, share
caught, median time to detect and held. False alerts belong to no window and
so to no kind; they stay per stream.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamlstm.evaluation.labels import Kind, Window
from streamlstm.evaluation.replay import Replay
from streamlstm.kernels import detect as K

DAY = 86_400.0


@dataclass
class Quality:
    """Detection quality of one stream or of all of them (see the module docstring)."""

    windows: int = 0
    caught: int = 0
    false_alerts: int = 0
    alerts: int = 0
    ttd: list[float] = field(default_factory=list)  # seconds, one per caught window
    # per counted window: (start, end, caught, seconds to detect or NaN, share of its
    # judged events the alert was open for)
    window_log: list[tuple[float, float, bool, float, float]] = field(default_factory=list)
    # the anomaly kind of each window_log entry (None: not named); a list beside
    # window_log, not a sixth item, so code unpacking its five items keeps working
    window_kinds: list[Kind] = field(default_factory=list)
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

    @property
    def held(self) -> float:
        """Mean share of a caught window's events the alert was open for."""
        shares = [w[4] for w in self.window_log if w[2]]
        return float(np.mean(shares)) if shares else math.nan

    def __iadd__(self, o: Quality) -> Quality:
        self.windows += o.windows
        self.caught += o.caught
        self.false_alerts += o.false_alerts
        self.alerts += o.alerts
        self.ttd += o.ttd
        self.window_log += o.window_log
        self.window_kinds += o.window_kinds
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
            "held": self.held,
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
    kinds: Sequence[Kind] | None = None,
) -> Quality:
    """Quality of one stream from its events (see :mod:`streamlstm.evaluation`).

    A window counts only where there are judged events to catch it: one that
    ends before judging starts, or starts after the last event, does not.
    ``kinds`` names each window's anomaly kind (None or absent: not named).
    """
    q = Quality()
    jt = times[judged]
    if jt.size == 0:
        return q
    first, last = float(jt.min()), float(jt.max())
    q.judged_days = (last - first) / DAY
    alert_t = times[opened & judged]
    q.alerts = int(alert_t.size)
    inside = np.zeros(alert_t.size, bool)
    for i, (a, b) in enumerate(windows):
        if b < first or a > last:
            continue  # no judged event could catch it
        q.windows += 1
        hit = (alert_t >= a) & (alert_t <= b)
        inside |= hit
        in_w = judged & (times >= a) & (times <= b)
        share = float(alert[in_w].mean()) if in_w.any() else 0.0
        ttd = math.nan
        if hit.any():
            q.caught += 1
            ttd = float(alert_t[np.argmax(hit)] - a)
            q.ttd.append(ttd)
        q.window_log.append((float(a), float(b), bool(hit.any()), ttd, share))
        q.window_kinds.append(kinds[i] if kinds is not None and i < len(kinds) else None)
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
            rep.kinds.get(key),
        )
        per[key] = q
        total += q
    return total, per


# -- per anomaly kind -----------------------------------------------------------------
UNNAMED_KIND = "(not named)"  # windows of no named kind, beside named ones


@dataclass
class KindQuality:
    """The windows of one anomaly kind: how many, caught, when, and for how long."""

    kind: str
    windows: int = 0
    caught: int = 0
    ttd: list[float] = field(default_factory=list)  # seconds, one per caught window
    held_shares: list[float] = field(default_factory=list)  # one per caught window

    @property
    def recall(self) -> float:
        """Share of the kind's windows caught."""
        return _ratio(self.caught, self.windows)

    @property
    def median_ttd(self) -> float:
        return float(np.median(self.ttd)) if self.ttd else math.nan

    @property
    def held(self) -> float:
        """Mean share of a caught window's events the alert was open for (as Quality.held)."""
        return float(np.mean(self.held_shares)) if self.held_shares else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "windows": self.windows,
            "caught": self.caught,
            "missed": self.windows - self.caught,
            "recall": self.recall,
            "median_ttd_s": self.median_ttd,
            "held": self.held,
        }


def kind_quality(q: Quality) -> dict[str, KindQuality]:
    """Per anomaly kind (by name; windows of no named kind last), from ``q``'s window log.

    Empty when no window names a kind, so unlabelled data shows no kind table.
    """
    if not any(k is not None for k in q.window_kinds):
        return {}
    out: dict[str, KindQuality] = {}
    for (_, _, caught, ttd, share), kind in zip(q.window_log, q.window_kinds, strict=True):
        name = UNNAMED_KIND if kind is None else kind
        kq = out.setdefault(name, KindQuality(name))
        kq.windows += 1
        if caught:
            kq.caught += 1
            kq.ttd.append(ttd)
            kq.held_shares.append(share)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] == UNNAMED_KIND, kv[0])))


def window_records(per: Mapping[str, Quality]) -> list[dict[str, object]]:
    """Every counted window of every stream, by stream then start, for JSON output."""
    out: list[dict[str, object]] = []
    for key in sorted(per):
        q = per[key]
        for (a, b, caught, ttd, share), kind in zip(q.window_log, q.window_kinds, strict=True):
            out.append(
                {
                    "stream": key,
                    "start": a,
                    "end": b,
                    "kind": kind,
                    "caught": caught,
                    "ttd_s": None if math.isnan(ttd) else ttd,
                    "held": share,
                }
            )
    return out


# -- threshold sweep ----------------------------------------------------------------
def replay_alerts(rep: Replay, open_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """(alert, transition) the detector would have produced at ``open_thr``."""
    cfg = rep.config
    cached = rep.info.get("_slots")  # tagged with the arrays it was built from
    if cached is None or cached[0] is not rep.keys or cached[1] is not rep.outcome:
        _, slots = np.unique(rep.keys, return_inverse=True)
        cached = (rep.keys, rep.outcome, slots.astype(np.int64))
        rep.info["_slots"] = cached
    out_alert, out_trans = cfg.replay_alerts(
        cached[2], rep.times, rep.score, rep.outcome, open_thr, hold=rep.hold
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
