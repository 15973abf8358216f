"""Whole-stream forecasts with the training kernels (validation, residuals, baselines).

A stream is run from a starting event with a fresh state (as the detector
starts a new stream), in groups of streams and stretches of time whose state
is carried over, so memory stays bounded whatever the length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamlstm.kernels import train as KT

GROUP = 64  # streams per kernel call
STRETCH = 512  # steps per kernel call; the state is carried between stretches


@dataclass
class StreamForecasts:
    """sse / n over the counted targets; ``preds[i]`` (n_i - 1 - a_i, F) float32
    forecasts of events ``a_i + 1 .. n_i - 1`` of stream i (when kept) and
    ``starts[i] = a_i``, the first event fed."""

    sse: float
    n: int
    preds: list[np.ndarray] | None
    starts: list[int]

    @property
    def loss(self) -> float:
        return self.sse / self.n if self.n else float("nan")


def run_streams(
    net: KT.Net,
    xns: Sequence[np.ndarray],
    first_target: Sequence[int],
    context: int | None = None,
    keep_preds: bool = False,
    chunk: int = 8,
    targets: Sequence[np.ndarray] | None = None,
) -> StreamForecasts:
    """Forecast every stream; count squared errors of targets at index >= first_target[i].

    xns[i] : (n_i, I) float32 normalised inputs. The stream is fed from
    ``a_i = max(0, first_target[i] - 1 - context)`` (from 0 when context is
    None), so the state has seen ``context`` events before the first counted
    forecast. ``targets[i]`` ((n_i - 1, F), the target of the forecast made at
    each event) replaces the next row of ``xns[i]`` (per-stream normalisation).
    """
    n_feat = net.n_feat
    sse, n_cnt = 0.0, 0
    starts = [0 if context is None else max(0, int(ft) - 1 - context) for ft in first_target]
    preds: list[np.ndarray] | None = [np.empty((0, n_feat), np.float32)] * len(xns)
    ws = KT.Workspace()
    order = [i for i in range(len(xns)) if xns[i].shape[0] - starts[i] >= 2]
    for g0 in range(0, len(order), GROUP):
        members = order[g0 : g0 + GROUP]
        lens = [xns[i].shape[0] - 1 - starts[i] for i in members]
        steps = max(lens)
        b = len(members)
        x = np.full((b, steps, net.in_size), np.nan, np.float32)
        x[:, :, n_feat:] = 0.0
        y = np.full((b, steps, n_feat), np.nan, np.float32)
        for r, i in enumerate(members):
            a, ln = starts[i], lens[r]
            x[r, :ln] = xns[i][a : a + ln]
            if targets is None:
                tgt = xns[i][a + 1 : a + 1 + ln, :n_feat]
            else:
                tgt = targets[i][a : a + ln]
            skip = max(0, int(first_target[i]) - (a + 1))
            y[r, skip:ln] = tgt[skip:]
        out = np.empty((b, steps, n_feat), np.float32) if keep_preds else None
        fc = h = c = None
        for t0 in range(0, steps, STRETCH):
            t1 = min(steps, t0 + STRETCH)
            res = KT.forward(
                net, x[:, t0:t1], y[:, t0:t1], fc0=fc, h0=h, c0=c, chunk=chunk, workspace=ws
            )
            sse += res.sse
            n_cnt += res.n_present
            fc, h, c = res.next_fc, res.h, res.c
            if out is not None:
                out[:, t0:t1] = res.preds
        if out is not None and preds is not None:
            for r, i in enumerate(members):
                preds[i] = out[r, : lens[r]].copy()
    return StreamForecasts(sse, n_cnt, preds if keep_preds else None, starts)


def naive_loss(
    xns: Sequence[np.ndarray],
    first_target: Sequence[int],
    n_feat: int,
    lag: int = 1,
    targets: Sequence[np.ndarray] | None = None,
) -> tuple[float, int]:
    """SSE and count of the forecast ``x̂_j = x_{j - lag}`` (last observed value at or
    before ``j - lag``; lag 1 = last value, lag = season = seasonal naive) over
    present targets ``j >= first_target``; targets without such a value are skipped.
    ``targets`` as in :func:`run_streams`."""
    sse, cnt = 0.0, 0
    for i, (xn, ft) in enumerate(zip(xns, first_target, strict=True)):
        v = xn[:, :n_feat].astype(np.float64)
        n = v.shape[0]
        # forward fill along time, per feature
        idx = np.where(~np.isnan(v), np.arange(n)[:, None], -1)
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = np.where(idx >= 0, v[np.maximum(idx, 0), np.arange(v.shape[1])], np.nan)
        j = np.arange(max(int(ft), lag), n)
        if j.size == 0:
            continue
        tgt = v[j] if targets is None else targets[i][j - 1].astype(np.float64)
        d = tgt - filled[j - lag]
        ok = ~np.isnan(d)
        sse += float(np.sum(d[ok] ** 2))
        cnt += int(ok.sum())
    return sse, cnt
