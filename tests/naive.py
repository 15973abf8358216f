"""Slow, obviously correct references for the kernels (plain numpy, float64).

Weights are taken in PyTorch's layout straight from a :class:`Model`, so these
share nothing with the kernels' transposed, padded layout.
"""

from __future__ import annotations

import math

import numpy as np

from streamlstm.model import Model


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lstm_step(
    model: Model, x: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One event through a stacked LSTM. h, c : (L, H) float64. Returns new (h, c)."""
    hid = model.hidden
    h2, c2 = h.copy(), c.copy()
    inp = x.astype(np.float64)
    for k in range(model.layers):
        g = (
            model.weight_ih[k].astype(np.float64) @ inp
            + model.bias_ih[k]
            + model.weight_hh[k].astype(np.float64) @ h[k]
            + model.bias_hh[k]
        )
        i, f, gg, o = (g[j * hid : (j + 1) * hid] for j in range(4))
        c2[k] = sigmoid(f) * c[k] + sigmoid(i) * np.tanh(gg)
        h2[k] = sigmoid(o) * np.tanh(c2[k])
        inp = h2[k]
    return h2, c2


def gru_step(model: Model, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One event through a stacked GRU (PyTorch's equations). h : (L, H) float64."""
    hid = model.hidden
    h2 = h.copy()
    inp = x.astype(np.float64)
    for k in range(model.layers):
        gi = model.weight_ih[k].astype(np.float64) @ inp + model.bias_ih[k]
        gh = model.weight_hh[k].astype(np.float64) @ h[k] + model.bias_hh[k]
        r = sigmoid(gi[:hid] + gh[:hid])
        z = sigmoid(gi[hid : 2 * hid] + gh[hid : 2 * hid])
        n = np.tanh(gi[2 * hid :] + r * gh[2 * hid :])
        h2[k] = (1 - z) * n + z * h[k]
        inp = h2[k]
    return h2


def head(model: Model, h_top: np.ndarray) -> np.ndarray:
    return model.head_weight.astype(np.float64) @ h_top + model.head_bias


def run_stream(model: Model, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised inputs (T, I) of one stream -> (forecasts (T, F) made *before* each
    event (NaN for the first), final h (L, H), final c (L, H))."""
    n_layers, hid = model.layers, model.hidden
    h = np.zeros((n_layers, hid))
    c = np.zeros((n_layers, hid))
    out = np.full((len(xs), model.n_features), np.nan)
    fc = None
    last = None
    n_feat = model.n_features
    for t, x in enumerate(xs):
        if fc is not None:
            out[t] = fc
        inp = np.asarray(x, np.float64)
        if model.delta:  # a model of changes: the clipped change in, the value added back
            cin = inp.copy()
            cin[:n_feat] = 0.0 if last is None else np.clip(inp[:n_feat] - last, -8.0, 8.0)
            last = inp[:n_feat]
            inp = cin
        if model.cell == "lstm":
            h, c = lstm_step(model, inp, h, c)
        else:
            h = gru_step(model, inp, h)
        fc = head(model, h[-1]) + (last if model.delta else 0.0)
    return out, h, c


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class NaiveScorer:
    """The scorer and alert state machine of one stream, in plain Python.

    Mirrors DetectorConfig's semantics (EWMA smoothing of the error; with
    stream_scale, u / (1 + u) of its ratio to a decaying recent maximum that
    learns from errors below learn_ratio times it, and in warm-up grows by at
    most learn_ratio per event; else the
    Wilson-Hilferty mapping;
    warm-up, min_run, close_run, cooldown in event time).
    """

    def __init__(self, resid_scale, open_thr, close_thr, min_run, close_run, cooldown,
                 warmup, stream_scale, scale_window, smooth, min_scale,
                 learn_ratio=2.0) -> None:  # fmt: skip
        self.rs = np.asarray(resid_scale, np.float64)
        self.open, self.close = open_thr, close_thr
        self.min_run, self.close_run, self.cooldown = min_run, close_run, cooldown
        self.warmup, self.stream_scale, self.window = warmup, stream_scale, scale_window
        self.alpha_s = 2.0 / (smooth + 1.0)
        self.min_scale = min_scale
        self.learn_ratio = learn_ratio
        self.scale = 0.0
        self.scale_n = 0
        self.sm = None
        self.in_alert = False
        self.run = 0
        self.below = 0
        self.cool_until = 0.0
        self.events = 0

    def step(self, t: float, x: np.ndarray, fc: np.ndarray | None) -> tuple[float, str | None]:
        score, trans = math.nan, None
        if fc is not None:
            present = ~np.isnan(x)
            r = (x[present].astype(np.float64) - fc[present].astype(np.float64)) / self.rs[present]
            e = float(np.sum(r * r)) / int(present.sum())
            self.sm = e if self.sm is None else self.sm + self.alpha_s * (e - self.sm)
            if self.stream_scale:
                if self.scale_n == 0:
                    self.scale = max(self.sm, self.min_scale)
                u = self.sm / self.scale
                score = u / (1.0 + u)
                decayed = max(self.scale * math.exp(-1.0 / self.window), self.min_scale)
                if u < self.learn_ratio:
                    self.scale = max(decayed, self.sm)
                    self.scale_n += 1
                elif self.events < self.warmup:
                    self.scale = max(decayed, self.scale * self.learn_ratio)
                    self.scale_n += 1
                else:
                    self.scale = decayed
            else:
                k = int(present.sum())
                q9 = 2.0 / (9.0 * k)
                score = phi((self.sm ** (1.0 / 3.0) - (1.0 - q9)) / math.sqrt(q9))
            if not self.in_alert:
                self.run = (
                    self.run + 1 if (self.events >= self.warmup and score >= self.open) else 0
                )
                if self.run >= self.min_run and t >= self.cool_until:
                    self.in_alert, self.run, self.below, trans = True, 0, 0, "opened"
            else:
                self.below = self.below + 1 if score < self.close else 0
                if self.below >= self.close_run:
                    self.in_alert, self.below, trans = False, 0, "closed"
                    self.cool_until = t + self.cooldown
        self.events += 1
        return score, trans


class NaiveStreamNorm:
    """Per-stream normalisation of one stream (streamlstm.kernels.norm), in plain Python.

    The first ``clip_after`` values of each feature give np.mean / np.var of the
    values so far. After them every deviation from the mean is clipped to
    ``clip`` standard deviations, then learnt with weight 1 / n up to ``window``
    values; after ``window`` "warmup" freezes and "ewm" keeps weight 1 / window.
    A feature whose standard deviation is below the floor is divided by 1.
    """

    def __init__(self, n_feat, mode, window, min_std=1e-6, rel_std=1e-5, clip=4.0,
                 clip_after=16) -> None:  # fmt: skip
        self.mode, self.window, self.clip_after = mode, window, clip_after
        self.min_std, self.rel_std, self.clip = min_std, rel_std, clip
        self.seen: list[list[float]] = [[] for _ in range(n_feat)]
        self.count = np.zeros(n_feat, np.int64)
        self.mean = np.zeros(n_feat)
        self.var = np.zeros(n_feat)

    def scale(self, f: int) -> float:
        """Standard deviation of feature ``f``, 0.0 while it has not varied."""
        sd = math.sqrt(self.var[f])
        return sd if sd >= max(self.min_std, self.rel_std * abs(self.mean[f])) else 0.0

    def sd(self, f: int) -> float:
        """What values are divided by: the scale, or 1 while there is none."""
        return self.scale(f) or 1.0

    def step(self, z: np.ndarray) -> np.ndarray:
        """Learn the present values of ``z`` (F,), then return z' (float64, NaN kept)."""
        out = np.full(len(z), np.nan)
        for f, v in enumerate(np.asarray(z, np.float64)):
            if math.isnan(v):
                continue
            n = int(self.count[f])
            if n < min(self.clip_after, self.window):
                self.seen[f].append(v)
                self.mean[f] = np.mean(self.seen[f])
                self.var[f] = np.var(self.seen[f])
                self.count[f] += 1
            elif n < self.window or self.mode == "ewm":
                a = 1.0 / min(n + 1, self.window)
                d = v - self.mean[f]
                if n >= self.clip_after:
                    lim = self.clip * self.sd(f)
                    d = min(max(d, -lim), lim)
                self.mean[f] += a * d
                self.var[f] = (1 - a) * (self.var[f] + a * d * d)
                self.count[f] += 1
            out[f] = (v - self.mean[f]) / self.sd(f)
        return out
