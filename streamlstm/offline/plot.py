"""PNG of one scored stream: each feature with its forecast, then the score.

Used by ``streamlstm score --plot``. matplotlib runs with the Agg backend (no
display needed) and is imported only here, so nothing else pays for it.

Layout: one panel per feature (the series in its units, the forecast it was
compared with dashed), then a score panel with the open threshold as a line;
alert spans are shaded red on every panel. Times that look like epoch
seconds are drawn as UTC dates. Long series are thinned to about
``MAX_POINTS`` points per line (the score keeps the maximum of each bin, so
a one-event spike stays visible).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_POINTS = 20_000
EPOCH_FLOOR = 1e8  # seconds; later than 1973-03, so "looks like a date"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def plot_path(path: Path, key: str, used: set[str]) -> Path:
    """``<stem>-<key>.png`` next to ``path``, key made file-name safe and unique."""
    safe = _UNSAFE.sub("_", key).strip("._") or "stream"
    safe = safe[:80]
    name, n = safe, 1
    while name in used:
        n += 1
        name = f"{safe}-{n}"
    used.add(name)
    return path.with_name(f"{path.stem}-{name}{path.suffix or '.png'}")


def _thin(n: int) -> int:
    return max(1, -(-n // MAX_POINTS))


def _bin_max(a: np.ndarray, step: int) -> np.ndarray:
    if step == 1:
        return a
    m = -(-a.shape[0] // step) * step
    padded = np.full(m, np.nan, np.float64)
    padded[: a.shape[0]] = a
    with np.errstate(invalid="ignore"):
        out = np.fmax.reduce(padded.reshape(-1, step), axis=1)
    return out


def plot_stream(
    path: str | Path,
    key: str,
    features: Sequence[str],
    times: np.ndarray,
    x: np.ndarray,
    forecast: np.ndarray,
    score: np.ndarray,
    spans: Sequence[tuple[float, float | None]],
    threshold: float,
) -> Path:
    """Draw one stream and write ``path`` (PNG). Returns the path.

    times : (n,) float64 seconds; x, forecast : (n, F) float32 in feature
    units (NaN = missing / none); score : (n,) float32 in [0, 1] (NaN = not
    scored); spans : (opened, closed or None if still open) in seconds.
    """
    from streamlstm.errors import pyplot

    plt = pyplot()

    path = Path(path)
    n_feat = len(features)
    n = times.shape[0]
    step = _thin(n)
    as_dates = n > 0 and float(np.nanmedian(times)) > EPOCH_FLOOR

    def axis_t(t: np.ndarray) -> np.ndarray:
        if as_dates:
            return (t * 1e3).astype("datetime64[ms]")
        return t

    t_line = axis_t(times[::step])
    fig_h = 1.6 * n_feat + 2.0
    fig, axes = plt.subplots(
        n_feat + 1,
        1,
        sharex=True,
        figsize=(11, fig_h),
        gridspec_kw={"height_ratios": [1.0] * n_feat + [1.1]},
        squeeze=False,
    )
    ax_list = [a for row in axes for a in row]
    last_t = float(times[-1]) if n else 0.0
    for j, name in enumerate(features):
        ax = ax_list[j]
        ax.plot(t_line, x[::step, j], lw=0.8, color="tab:blue", label=name)
        ax.plot(t_line, forecast[::step, j], lw=0.8, ls="--", color="tab:orange", label="forecast")
        ax.set_ylabel(name)
        ax.legend(loc="upper left", fontsize=7, ncol=2, frameon=False)
    ax_s = ax_list[-1]
    if step > 1:
        t_bins = axis_t(times[::step])
        ax_s.plot(
            t_bins,
            _bin_max(score.astype(np.float64), step)[: t_bins.shape[0]],
            lw=0.8,
            color="tab:green",
            label="score (max per bin)",
        )
    else:
        ax_s.plot(t_line, score, lw=0.8, color="tab:green", label="score")
    ax_s.axhline(threshold, color="tab:red", lw=0.8, ls=":", label=f"open {threshold:g}")
    ax_s.set_ylim(-0.02, 1.02)
    ax_s.set_ylabel("score")
    ax_s.legend(loc="upper left", fontsize=7, ncol=2, frameon=False)
    for opened, closed in spans:
        lo = axis_t(np.array([opened]))[0]
        hi = axis_t(np.array([closed if closed is not None else last_t]))[0]
        for ax in ax_list:
            ax.axvspan(lo, hi, color="tab:red", alpha=0.15, lw=0)
    n_alerts = len(spans)
    title = f"{key}: {n} events, {n_alerts} alert{'s' if n_alerts != 1 else ''}"
    if step > 1:
        title += f" (every {step}th point drawn; score = max per bin)"
    ax_list[0].set_title(title, fontsize=10, loc="left")
    ax_s.set_xlabel("time (UTC)" if as_dates else "time (s)")
    if as_dates:
        fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
