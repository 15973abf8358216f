"""Evaluation output: the text table (stdout) and the HTML or PNG report.

The text has, in order: the per-stream table with the overall row; when the
labels name anomaly kinds, the per-kind table (windows, caught, share caught,
median time to detect, held; false alerts have no kind and stay in the stream
table); the per-window log (stream, kind when known, start, length, caught,
time to detect, held); the threshold sweep. The HTML report embeds the same
text.

The HTML report is one self-contained file: PNG plots embedded as base64
``data:`` URIs, no scripts, no external assets, so it can be mailed or
attached to a ticket. Per stream (the ``max_streams`` most interesting: most
windows, then most false alerts) it shows the series with labelled windows
(green) and alert spans (red), and the score with the open threshold (on a
"nines" axis, ``-log10(1 - score)``, for the absolute chi-square scores whose
thresholds sit near 1; linear for the default stream-relative scores). The
threshold sweep is drawn as windows caught and false alerts per day against
the threshold, and as a precision/recall curve.

Length: the text table, the plots and the HTML page share the row, colour and time-axis
helpers; split, each would import the others.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.evaluation.metrics import (
    DAY,
    KindQuality,
    Quality,
    SweepPoint,
    best_point,
    kind_quality,
)
from streamlstm.evaluation.replay import Replay
from streamlstm.kernels import detect as K

GREEN = "#2ca02c"
RED = "#d62728"


# -- text ---------------------------------------------------------------------------
def _f(v: float, nd: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _dur(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


TABLE_COLUMNS = (
    "stream",
    "windows",
    "caught",
    "missed",
    "false",
    "P",
    "R",
    "F1",
    "TTD(med)",
    "held",
    "false/day",
    "pP",
    "pR",
    "pF1",
    "FAR",
    "MAR",
)


def quality_row(name: str, q: Quality) -> list[str]:
    return [
        name,
        str(q.windows),
        str(q.caught),
        str(q.missed),
        str(q.false_alerts),
        _f(q.precision),
        _f(q.recall),
        _f(q.f1),
        _dur(q.median_ttd),
        _f(q.held, 2),
        _f(q.false_per_day, 2),
        _f(q.point_precision),
        _f(q.point_recall),
        _f(q.point_f1),
        _f(q.far),
        _f(q.mar),
    ]


KIND_COLUMNS = ("kind", "windows", "caught", "caught %", "TTD(med)", "held")


def kind_row(k: KindQuality) -> list[str]:
    pct = "-" if math.isnan(k.recall) else f"{100 * k.recall:.0f}%"
    held = "-" if math.isnan(k.held) else f"{100 * k.held:.0f}%"
    return [k.kind, str(k.windows), str(k.caught), pct, _dur(k.median_ttd), held]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned columns: the first ``left`` (names) to the left, the rest (numbers) right."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" if i < left else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def format_text(
    total: Quality,
    per: Mapping[str, Quality],
    points: Sequence[SweepPoint],
    open_threshold: float,
    max_rows: int = 50,
) -> str:
    """Per-stream table (at most ``max_rows``, most windows first), overall, and the sweep."""
    keys = sorted(per, key=lambda k: (-per[k].windows, -per[k].false_alerts, k))
    rows = [quality_row(k, per[k]) for k in keys[:max_rows]]
    out = [
        f"detection quality at open threshold {open_threshold:.6g} "
        "(window-level P/R/F1, TTD = time to detect; pP/pR/pF1/FAR/MAR point-wise)"
    ]
    if len(keys) > max_rows:
        out.append(f"({len(keys) - max_rows} more streams not shown)")
    out.append(_table(TABLE_COLUMNS, rows + [quality_row("OVERALL", total)]))
    kinds = kind_quality(total)
    if kinds:
        out.append("")
        out.append("per anomaly kind (held: mean share of a caught window the alert stayed open):")
        out.append(_table(KIND_COLUMNS, [kind_row(k) for k in kinds.values()]))
    wrows = [
        [k, *([kind or "-"] if kinds else []), _dt_text(a), _dur(b - a), "yes" if c else "no",
         _dur(ttd), f"{100 * held:.0f}%"]
        for k in keys
        for (a, b, c, ttd, held), kind in zip(per[k].window_log, per[k].window_kinds, strict=True)
    ]  # fmt: skip
    if wrows:
        out.append("")
        out.append(
            "per labelled window: caught (an alert opened inside), when (time to detect), "
            "and for how much of the window the alert stayed open:"
        )
        shown = wrows[:max_rows]
        header = ["stream", *(["kind"] if kinds else []), "window start", "length"]
        out.append(_table([*header, "caught", "TTD", "held"], shown, left=2 if kinds else 1))
        if len(wrows) > max_rows:
            out.append(f"({len(wrows) - max_rows} more windows not shown)")
    if points:
        out.append("")
        out.append("threshold sweep (same scores, alert machine re-run per threshold):")
        srows = [
            [
                _f(p.threshold, 6),
                str(p.quality.caught),
                str(p.quality.false_alerts),
                _f(p.quality.f1),
                _f(p.quality.false_per_day, 2),
                _f(p.quality.point_f1),
                _f(p.quality.far),
                _f(p.quality.mar),
            ]
            for p in points
        ]
        out.append(
            _table(["threshold", "caught", "false", "F1", "false/day", "pF1", "FAR", "MAR"], srows)
        )
        for pointwise, label in ((False, "window F1"), (True, "point-wise F1")):
            b = best_point(points, pointwise)
            if b is not None:
                f = b.quality.point_f1 if pointwise else b.quality.f1
                out.append(
                    f"best {label} {f:.3f} at threshold {b.threshold:.6g} "
                    "(in hindsight: not a fair operating point)"
                )
    return "\n".join(out)


# -- plots --------------------------------------------------------------------------
def _nines(score: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log10(np.clip(1.0 - score.astype(np.float64), 1e-9, 1.0))


def _axis(rep_or_relative: Any) -> tuple[Any, str]:
    """Score transform and label: linear for relative scores, "nines" for tail probabilities."""
    relative = getattr(getattr(rep_or_relative, "config", None), "stream_scale", rep_or_relative)
    if relative:
        return (lambda s: np.asarray(s, np.float64)), "score"
    return _nines, "score (nines: -log10(1 - s))"


def _spans(t: np.ndarray, flag: np.ndarray) -> list[tuple[float, float]]:
    f = np.asarray(flag, bool)
    if not f.any():
        return []
    edges = np.diff(np.r_[0, f.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(float(t[a]), float(t[b])) for a, b in zip(starts, ends, strict=True)]


def _pick_streams(per: Mapping[str, Quality], max_streams: int) -> list[str]:
    keys = sorted(per, key=lambda k: (-per[k].windows, -per[k].false_alerts, k))
    return keys[:max_streams]


def stream_figure(rep: Replay, key: str, open_threshold: float | None = None) -> Any:
    """Figure for one stream: series + windows + alert spans, then the score."""
    from streamlstm.errors import pyplot

    plt = pyplot()

    idx = rep.stream_index(key)
    t = rep.times[idx]
    unit_name, unit = _time_unit(float(t[-1] - t[0]))
    rel = (t - t[0]) / unit
    thr = rep.info.get("open_thresholds", {}).get(key, open_threshold or rep.open_threshold)
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(11, 4.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    xs = rep.x[idx]
    if xs.shape[1] == 1:
        ax1.plot(rel, xs[:, 0], lw=0.6, color="#1f77b4", label=rep.features[0])
    else:  # several channels: standardise so they share an axis
        with np.errstate(invalid="ignore"):
            z = (xs - np.nanmean(xs, 0)) / np.where(np.nanstd(xs, 0) > 0, np.nanstd(xs, 0), 1)
        for j in range(min(8, xs.shape[1])):
            ax1.plot(rel, z[:, j] + 0 * j, lw=0.5, label=rep.features[j])
        ax1.set_ylabel("standardised")
    for a, b in rep.windows.get(key, []):
        for ax in (ax1, ax2):
            ax.axvspan((a - t[0]) / unit, (b - t[0]) / unit, color=GREEN, alpha=0.15, lw=0)
    for a, b in _spans(t, rep.alert[idx]):
        ax1.axvspan((a - t[0]) / unit, (b - t[0]) / unit, color=RED, alpha=0.25, lw=0)
    opened = idx[rep.transition[idx] == K.OPENED]
    if opened.size:
        ax1.plot(
            (rep.times[opened] - t[0]) / unit,
            rep.x[opened, 0] if xs.shape[1] == 1 else np.zeros(opened.size),
            "v",
            color=RED,
            ms=5,
            label="alert opens",
        )
    unjudged = ~rep.judged[idx]
    if unjudged.any():
        end = (t[np.flatnonzero(unjudged)[-1]] - t[0]) / unit
        for ax in (ax1, ax2):
            ax.axvspan(0, end, color="#888888", alpha=0.12, lw=0)
        ax1.text(
            0,
            0.02,
            " learning (not judged)",
            transform=ax1.get_xaxis_transform(),
            fontsize=7,
            color="#555555",
        )
    ax1.legend(loc="upper right", fontsize=7, ncol=4)
    ax1.set_title(key, fontsize=9, loc="left")
    tf, ylabel = _axis(rep)
    ax2.plot(rel, tf(rep.score[idx]), lw=0.5, color="#444444")
    ax2.axhline(
        tf(np.array([thr]))[0], color=RED, lw=0.8, ls="--", label=f"open threshold {thr:.4g}"
    )
    ax2.set_ylabel(ylabel)
    ax2.set_xlabel(f"{unit_name} since {_dt_text(t[0])}")
    ax2.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def _time_unit(span: float) -> tuple[str, float]:
    """The axis unit for a stream spanning ``span`` seconds: days, hours, minutes or seconds."""
    for name, size in (("days", DAY), ("hours", 3600.0), ("minutes", 60.0)):
        if span >= 2 * size:
            return name, size
    return "seconds", 1.0


def _dt_text(t: float) -> str:
    import datetime as _dt

    try:
        return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"t={t:g}"


def sweep_figure(points: Sequence[SweepPoint], open_threshold: float, relative: bool = True) -> Any:
    from streamlstm.errors import pyplot

    plt = pyplot()

    thr = np.array([p.threshold for p in points])
    tf, xlabel = _axis(relative)
    nines = tf(thr)
    rec = np.array([p.quality.recall for p in points])
    fpd = np.array([p.quality.false_per_day for p in points])
    pf1 = np.array([p.quality.point_f1 for p in points])
    wf1 = np.array([p.quality.f1 for p in points])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.plot(nines, rec, "o-", ms=3, color=GREEN, label="windows caught (recall)")
    ax1.plot(nines, wf1, "s-", ms=3, color="#9467bd", label="window F1")
    ax1.plot(nines, pf1, "^-", ms=3, color="#8c564b", label="point-wise F1")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_xlabel(f"open threshold ({xlabel})")
    ax1.axvline(tf(np.array([open_threshold]))[0], color="#444444", ls=":", lw=0.8)
    ax1b = ax1.twinx()
    ax1b.plot(nines, fpd, "x-", ms=3, color=RED, label="false alerts / day")
    ax1b.set_ylabel("false alerts / day", color=RED)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1b.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, fontsize=7, loc="center left")
    ax1.set_title("threshold sweep", fontsize=9, loc="left")
    prec = np.array([p.quality.point_precision for p in points])
    prec_r = np.array([p.quality.point_recall for p in points])
    wprec = np.array([p.quality.precision for p in points])
    ax2.plot(rec, wprec, "o-", ms=3, label="window level")
    ax2.plot(prec_r, prec, "^-", ms=3, label="point-wise")
    ax2.set_xlim(-0.02, 1.02)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("recall")
    ax2.set_ylabel("precision")
    ax2.legend(fontsize=7)
    ax2.set_title("precision / recall over thresholds", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def _png(fig: Any) -> bytes:
    from streamlstm.errors import pyplot

    plt = pyplot()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


# -- files --------------------------------------------------------------------------
def write_report(
    path: str | os.PathLike[str],
    rep: Replay,
    total: Quality,
    per: Mapping[str, Quality],
    points: Sequence[SweepPoint],
    *,
    title: str = "streamlstm evaluation",
    details: Mapping[str, Any] | None = None,
    max_streams: int = 12,
) -> Path:
    """Write ``path``: a self-contained HTML report, or one PNG when it ends in ``.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    streams = _pick_streams(per, max_streams)
    if path.suffix.lower() == ".png":
        _write_png(path, rep, streams, points)
        return path
    text = format_text(total, per, points, rep.open_threshold)
    imgs = (
        [
            (
                "threshold sweep",
                _png(sweep_figure(points, rep.open_threshold, rep.config.stream_scale)),
            )
        ]
        if points
        else []
    )
    imgs += [(k, _png(stream_figure(rep, k))) for k in streams]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1100px}"
        "pre{font-size:12px;background:#f6f6f6;padding:.8em;overflow-x:auto}"
        "img{max-width:100%;display:block;margin:.5em 0 1.5em}"
        "td,th{padding:2px 10px;text-align:left;font-size:13px}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if details:
        parts.append("<table>")
        for k, v in details.items():
            parts.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h2>Results</h2><pre>{html.escape(text)}</pre>")
    shown = len(streams)
    if len(per) > shown:
        parts.append(f"<p>Plots for {shown} of {len(per)} streams (most windows first).</p>")
    for name, png in imgs:
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<h3>{html.escape(name)}</h3>"
            f"<img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>"
        )
    parts.append("</body></html>")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _write_png(
    path: Path, rep: Replay, streams: Sequence[str], points: Sequence[SweepPoint]
) -> None:
    """One PNG: the sweep (if any) and up to four streams stacked."""
    from PIL import Image  # matplotlib depends on pillow

    pngs = (
        [_png(sweep_figure(points, rep.open_threshold, rep.config.stream_scale))] if points else []
    )
    pngs += [_png(stream_figure(rep, k)) for k in streams[:4]]
    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    width = max(i.width for i in images)
    sheet = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    y = 0
    for im in images:
        sheet.paste(im, (0, y))
        y += im.height
    tmp = path.with_name(f".{path.name}.tmp.png")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, path)
