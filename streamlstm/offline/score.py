"""Offline scoring of an event file: the engine behind ``streamlstm score``.

:func:`score_file` feeds every event of an :class:`~streamlstm.io.tabular.EventReader`
through a fresh :class:`~streamlstm.detector.Detector` (the daemon's engine,
no second code path), writes one row per input row in input order
(:class:`ScoreWriter`), follows the alerts (:class:`AlertTracker`) and, when
asked, keeps what the per-stream plots need (:class:`PlotBuffer`).
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from streamlstm.detector import OUTCOME_NAMES, BatchResult, Detector, DetectorConfig
from streamlstm.io.tabular import EventReader, Events
from streamlstm.model import Model

log = logging.getLogger(__name__)
TRANSITION_NAMES = ("", "opened", "closed")
OPENED = TRANSITION_NAMES.index("opened")
CLOSED = TRANSITION_NAMES.index("closed")
_NEEDS_QUOTES = (",", '"', "\r", "\n")


# A noisy file can open thousands of alerts; the summary lists the first ones.
@dataclass
class AlertSpan:
    """One alert seen in the file: when it opened and closed, its peak and drivers."""

    key: str
    opened: str  # time text as in the input
    opened_t: float
    closed: str | None = None
    closed_t: float | None = None
    peak: float = 0.0
    top: list[tuple[str, float]] = field(default_factory=list)  # (feature, share) at opening
    views: dict[str, str] = field(default_factory=dict)  # the view behind each, at opening


class AlertTracker:
    """Turns per-event transitions into alert spans (peak over the open events)."""

    def __init__(self) -> None:
        self.spans: list[AlertSpan] = []
        self._open: dict[str, AlertSpan] = {}

    def update(self, ev: Events, lo: int, res: BatchResult) -> None:
        """Account for events ``lo .. lo + n`` of chunk ``ev`` scored into ``res``."""
        by_index = {t.index: t for t in res.transitions}
        active = np.flatnonzero(res.alert | (res.transition != 0))
        for i in active.tolist():
            key = ev.keys[lo + i]
            tr = int(res.transition[i])
            if tr == OPENED:
                t = by_index[i]
                span = AlertSpan(
                    key,
                    ev.time_text[lo + i],
                    float(ev.times[lo + i]),
                    top=t.contributions[:3],
                    views=t.views,
                )
                self.spans.append(span)
                self._open[key] = span
            span_or_none = self._open.get(key)
            if span_or_none is not None:
                s = float(res.score[i])
                if res.alert[i] and math.isfinite(s):
                    span_or_none.peak = max(span_or_none.peak, s)
                if tr == CLOSED:
                    span_or_none.closed = ev.time_text[lo + i]
                    span_or_none.closed_t = float(ev.times[lo + i])
                    del self._open[key]


# -- output ----------------------------------------------------------------------------
def _floats(a: np.ndarray) -> list[str]:
    """float32 values as their shortest text that reads back exactly; '' for NaN/Inf.

    orjson formats a float32 array in C (shortest round-trip digits, 0.1 not
    0.100000001), twice as fast as a per-value f-string here.
    """
    text = orjson.dumps(np.ascontiguousarray(a, np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
    body = text.decode()[1:-1]
    return ["" if v == "null" else v for v in body.split(",")] if body else []


class ScoreWriter:
    """Per-event output rows, CSV or JSON-lines."""

    def __init__(self, fh: IO[str], features: Sequence[str], jsonl: bool) -> None:
        self.fh = fh
        self.features = list(features)
        self.jsonl = jsonl
        self.fc_names = [f"forecast_{f}" for f in self.features]
        self._csv = None if jsonl else csv.writer(fh, lineterminator="\n")
        if self._csv is not None:
            self._csv.writerow(
                ["key", "time", "score", "alert", "outcome", "transition", *self.fc_names]
            )

    def write(self, ev: Events, lo: int, res: BatchResult) -> None:
        n = len(res.outcome)
        keys = ev.keys[lo : lo + n]
        texts = ev.time_text[lo : lo + n]
        outcome = [OUTCOME_NAMES[o] for o in res.outcome.tolist()]
        trans = [TRANSITION_NAMES[t] for t in res.transition.tolist()]
        alert = res.alert.astype(np.int8).tolist()
        if self._csv is not None:
            fc = [_floats(res.forecast[:, j]) for j in range(len(self.features))]
            flags = ["1" if a else "0" for a in alert]
            rows = zip(keys, texts, _floats(res.score), flags, outcome, trans, *fc, strict=True)
            joined = "".join(keys) + "".join(texts)
            if any(c in joined for c in _NEEDS_QUOTES):
                self._csv.writerows(rows)
            else:
                # Nothing to quote (the other columns are numbers and fixed words):
                # str.join is 4x faster than csv.writer here.
                self.fh.write("".join([",".join(r) + "\n" for r in rows]))
            return
        times: list[Any] = [_json_time(s) for s in texts] if ev.time_numeric else texts
        # numpy float32 scalars: orjson writes them as the shortest float32 text
        # (62.381588, not 62.381587982177734) and NaN as null.
        score = list(res.score)
        fcs = list(res.forecast)
        dumps = orjson.dumps
        names = self.fc_names
        opts = orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
        self.fh.write(
            "".join(
                dumps(
                    {
                        "key": keys[i],
                        "time": times[i],
                        "score": score[i],
                        "alert": alert[i],
                        "outcome": outcome[i],
                        "transition": trans[i],
                        **dict(zip(names, fcs[i], strict=True)),
                    },
                    option=opts,
                ).decode()
                for i in range(n)
            )
        )


def _json_time(text: str) -> float | int:
    v = float(text)
    return int(v) if v.is_integer() and abs(v) < 2**53 else v


@contextmanager
def _open_out(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fh: IO[str]
    if p.name.endswith(".gz"):
        fh = gzip.open(p, "wt", encoding="utf-8", newline="")
    else:
        fh = open(p, "w", encoding="utf-8", newline="")
    with fh:
        yield fh


# -- plot data ---------------------------------------------------------------------------
class PlotBuffer:
    """Everything a plot needs, kept per chunk (only when --plot is given).

    Memory: about 8 (2F + 3) bytes per event on F features (float32 values,
    forecast and score, float64 time, int32 stream id, bool alert, with slack).
    """

    def __init__(self) -> None:
        self.ids: list[np.ndarray] = []
        self.times: list[np.ndarray] = []
        self.x: list[np.ndarray] = []
        self.fc: list[np.ndarray] = []
        self.score: list[np.ndarray] = []
        self.alert: list[np.ndarray] = []

    def add(self, ids: np.ndarray, times: np.ndarray, x: np.ndarray, res: BatchResult) -> None:
        self.ids.append(ids.astype(np.int32))
        self.times.append(times)
        self.x.append(x.astype(np.float32))
        self.fc.append(res.forecast)
        self.score.append(res.score)
        self.alert.append(res.alert)

    def stream(self, sid: int) -> dict[str, np.ndarray]:
        ids = np.concatenate(self.ids)
        m = ids == sid
        return {
            "times": np.concatenate(self.times)[m],
            "x": np.concatenate(self.x)[m],
            "forecast": np.concatenate(self.fc)[m],
            "score": np.concatenate(self.score)[m],
            "alert": np.concatenate(self.alert)[m],
        }


# -- the command ---------------------------------------------------------------------------
@dataclass
class ScoreSummary:
    events: int
    streams: int
    outcomes: dict[str, int]
    alerts: list[AlertSpan]
    seconds: float
    missing: dict[str, int]
    bad: str
    open_threshold: float
    close_threshold: float
    plots: list[Path] = field(default_factory=list)
    plot_skipped: int = 0
    continued: int = 0  # streams continued from the model's carried state
    carried: int = 0  # streams whose state the model carries


# A model of levels fed values this many training spreads from its training data's mean
# forecasts garbage (SKAB's runs at 37-59: one-step MSE ~2,000x the last value's)
FAR_SPREADS = 10.0


def far_from_training(model: Model, x: np.ndarray) -> str | None:
    """A warning when ``model`` reads levels and the median of a feature's values in ``x``
    (raw, (n, F)) lies FAR_SPREADS or more of its training spreads from its training
    mean; None otherwise (a model of changes reads changes, whatever the level).

    >>> from streamlstm.model import Model
    >>> m = Model.random(["flow"], hidden=4)
    >>> far_from_training(m, np.full((5, 1), 40.0)).split(")")[0]
    'the data sit far from what the model learnt (median, in training spreads: flow 40'
    >>> far_from_training(m, np.full((5, 1), 2.0)) is None
    True
    """
    if model.delta or x.shape[0] == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column
        away = np.abs(np.nanmedian(model.normalise(x), axis=0))
    hits = [(f, float(a)) for f, a in zip(model.features, away, strict=True) if a >= FAR_SPREADS]
    if not hits:
        return None
    what = ", ".join(f"{f} {a:.0f}" for f, a in hits)
    return (
        f"the data sit far from what the model learnt (median, in training spreads: {what}): "
        "this model reads levels and forecasts garbage there (its residual views "
        "see nothing); retrain with `streamlstm train`, whose models read changes "
        "(--inputs changes, the default), or train on data from this operating point"
    )


def score_file(
    model: Model,
    cfg: DetectorConfig,
    reader: EventReader,
    out: str,
    batch: int = 1024,
    plot: str | None = None,
    plot_max: int = 20,
    progress: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Feed every event of ``reader`` through a fresh detector; write rows to ``out``."""
    t0 = time.perf_counter()
    det = Detector(model, cfg)
    tracker = AlertTracker()
    stream_ids: dict[str, int] = {}
    buf = PlotBuffer() if plot else None
    n = 0
    jsonl = out.removesuffix(".gz").endswith((".jsonl", ".ndjson"))
    with _open_out(out) as fh:
        writer = ScoreWriter(fh, model.features, jsonl)
        for ev in reader:
            odd = reader.odd_times(ev) if n == 0 else None
            if odd:
                log.warning("%s", odd)
            far = far_from_training(model, ev.x) if n == 0 else None
            if far:
                log.warning("%s", far)
            ids = np.fromiter(
                (stream_ids.setdefault(k, len(stream_ids)) for k in ev.keys), np.int64, len(ev)
            )
            for lo in range(0, len(ev), batch):
                hi = min(lo + batch, len(ev))
                res = det.process_many(ev.keys[lo:hi], ev.times[lo:hi], ev.x[lo:hi])
                writer.write(ev, lo, res)
                tracker.update(ev, lo, res)
                if buf is not None:
                    buf.add(ids[lo:hi], ev.times[lo:hi], ev.x[lo:hi], res)
            n += len(ev)
            if progress is not None:
                progress(n)
    done = getattr(progress, "done", None)
    if done is not None:
        done()
    summary = ScoreSummary(
        events=n,
        streams=len(stream_ids),
        outcomes=dict(det.outcome_counts()),
        alerts=tracker.spans,
        seconds=time.perf_counter() - t0,
        missing=dict(reader.stats.missing),
        bad=reader.stats.bad_summary(),
        open_threshold=det.open_threshold,
        close_threshold=det.close_threshold,
        continued=det.carried.seeded if det.carried is not None else 0,
        carried=model.n_carried,
    )
    if buf is not None and plot:
        _draw(summary, buf, stream_ids, model, det, Path(plot), plot_max)
    return summary


def _draw(
    summary: ScoreSummary,
    buf: PlotBuffer,
    stream_ids: dict[str, int],
    model: Model,
    det: Detector,
    path: Path,
    plot_max: int,
) -> None:
    from streamlstm.offline.plot import plot_path, plot_stream  # matplotlib only when asked

    # Streams with alerts first (highest peak first), then in order of appearance.
    peak: dict[str, float] = {}
    for a in summary.alerts:
        peak[a.key] = max(peak.get(a.key, 0.0), a.peak)
    order = sorted(stream_ids, key=lambda k: (k not in peak, -peak.get(k, 0.0), stream_ids[k]))
    chosen = order[:plot_max]
    used: set[str] = set()
    for key in chosen:
        target = path if len(stream_ids) == 1 else plot_path(path, key, used)
        data = buf.stream(stream_ids[key])
        spans = [(a.opened_t, a.closed_t) for a in summary.alerts if a.key == key]
        plot_stream(
            target,
            key,
            model.features,
            data["times"],
            data["x"],
            data["forecast"],
            data["score"],
            spans,
            det.open_threshold,
        )
        summary.plots.append(target)
    summary.plot_skipped = len(order) - len(chosen)
