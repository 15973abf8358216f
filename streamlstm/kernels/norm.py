"""Per-stream input normalisation: one definition for the detector and the trainer.

A model normalises every stream with its global ``(x - norm_mean) / norm_std``.
A stream at another operating point or scale (a second machine, another
sensor range) then feeds the forecaster values it never saw, and SCORING.md
measured more than 70% missed alarms for that. With per-stream
normalisation each stream's model-normalised feature ``z`` is re-standardised
with the stream's own statistics before it is scored and fed to the cell::

    z' = (z - m) / sqrt(v)      (/ 1 while the feature has not varied, see NORM_MIN_STD)

``m`` and ``v`` are learnt from the stream's own events, per feature; a missing
(NaN) value teaches nothing. After each event (the event included):

- the first ``window`` values: running mean and population variance
  (Welford, ``a = 1 / n``), so the first value gives ``z' = 0``;
- then, ``MODE_WARMUP``: frozen; ``MODE_EWM``: an exponentially weighted mean
  and variance with ``a = 1 / window``, so a lasting change of level is
  learnt over about ``window`` events.

From the ``NORM_CLIP_AFTER``-th value on, the deviation ``d = z - m`` is
clipped to ``NORM_CLIP`` standard deviations before it teaches anything, so a
spike or an incident (during the warm-up too) moves the statistics no more
than a ``NORM_CLIP``-sigma value would.

Both updates are ``m += a d``, ``v = (1 - a) (v + a d^2)`` with ``d = z - m``.
Nothing here depends on scores or alert thresholds, so threshold sweeps stay
exact and the trainer can apply the same transform to history
(:func:`normalise_series`).

State of one stream: ``nstat[s]`` is (3, F) float64, rows ``NS_COUNT``
(values learnt from), ``NS_MEAN``, ``NS_VAR``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlstm.kernels.config import NJIT

MODE_OFF = 0
MODE_WARMUP = 1
MODE_EWM = 2
MODES = {"off": MODE_OFF, "warmup": MODE_WARMUP, "ewm": MODE_EWM}

NS_COUNT = 0
NS_MEAN = 1
NS_VAR = 2
N_NSTAT = 3

# Events the statistics learn from when neither the detector's config nor the
# model says: a standard deviation from n values is within ~1/sqrt(2n), 4%, of the
# truth at 256, and a stream is learnt within minutes at 1 Hz.
DEFAULT_WINDOW = 256
# A standard deviation below max(NORM_MIN_STD, NORM_REL_STD * |m|) means the
# feature has not varied for this stream (inputs are float32, so a spread below
# ~100 float32 steps of |m| is rounding): it is then left in model units
# (divided by 1, as the trainer gives a constant feature std 1). Dividing by a
# floor instead made the first normal change of a feature that was constant
# during warm-up (a valve that had not moved yet) a value of millions, frozen
# in. The floor is tiny and not in model units on purpose: in a fleet whose
# streams sit 1000x apart, the small streams' spread is ~1e-4 model units and
# must still be standardised.
NORM_MIN_STD = 1e-6
NORM_REL_STD = 1e-5
# EWM mode: deviations are clipped to this many standard deviations before they
# teach the statistics, so a spike or an incident barely moves them. 4 rather
# than 3: clipping heavy-tailed normal data at 3 sigma shrinks the variance estimate.
NORM_CLIP = 4.0
# Values learnt before clipping starts: the spread of fewer is too uncertain
# (~20% at 16) to call anything an outlier.
NORM_CLIP_AFTER = 16


@njit(**NJIT)
def _norm_scale(nstat, s, f):  # pragma: no cover - compiled
    """The feature's standard deviation, or 0.0 while it has not varied (see the floor)."""
    v = nstat[s, NS_VAR, f]
    sd = math.sqrt(v) if v > 0.0 else 0.0
    if sd < max(NORM_MIN_STD, NORM_REL_STD * abs(nstat[s, NS_MEAN, f])):
        return 0.0
    return sd


@njit(**NJIT)
def _norm_sd(nstat, s, f):  # pragma: no cover - compiled
    """Standard deviation to divide by: 1 for a feature that has not varied."""
    sd = _norm_scale(nstat, s, f)
    return sd if sd > 0.0 else 1.0


@njit(**NJIT)
def _norm_learn(nstat, s, f, z, mode, window):  # pragma: no cover - compiled
    """Teach slot ``s``'s statistics of feature ``f`` the present value ``z`` (float64).

    nstat : (n_slots, N_NSTAT, F) float64, updated in place. window : float64 >= 1.
    """
    n = nstat[s, NS_COUNT, f]
    if n >= window and mode == MODE_WARMUP:
        return
    m = nstat[s, NS_MEAN, f]
    d = z - m
    if n >= NORM_CLIP_AFTER:
        lim = NORM_CLIP * _norm_sd(nstat, s, f)
        d = min(max(d, -lim), lim)
    a = 1.0 / window if n >= window else 1.0 / (n + 1.0)
    nstat[s, NS_COUNT, f] = n + 1.0
    nstat[s, NS_MEAN, f] = m + a * d
    nstat[s, NS_VAR, f] = (1.0 - a) * (nstat[s, NS_VAR, f] + a * d * d)


@njit(**NJIT)
def _norm_apply(nstat, s, f, z):  # pragma: no cover - compiled
    """float32 ``z'`` of the model-normalised value ``z`` with slot ``s``'s statistics."""
    return np.float32((np.float64(z) - nstat[s, NS_MEAN, f]) / _norm_sd(nstat, s, f))


@njit(**NJIT)
def _normalise_series(z, mode, window, nstat):  # pragma: no cover - compiled
    """One stream's events in order: learn, then apply, as the detector does; and
    each next event's value with this event's statistics (the forecast target)."""
    n, n_feat = z.shape
    out = np.empty((n, n_feat), np.float32)
    nxt = np.full((n, n_feat), np.nan, np.float32)
    for t in range(n):
        for f in range(n_feat):
            v = z[t, f]
            if math.isnan(v):
                out[t, f] = v
            else:
                m0 = nstat[0, NS_MEAN, f]
                sc0 = _norm_scale(nstat, 0, f)
                _norm_learn(nstat, 0, f, np.float64(v), mode, window)
                out[t, f] = _norm_apply(nstat, 0, f, v)
                if t > 0:
                    # the units the detector reads the forecast made at t - 1 in
                    sc = sc0 if sc0 > 0.0 else _norm_sd(nstat, 0, f)
                    nxt[t - 1, f] = np.float32((np.float64(v) - m0) / sc)
    return out, nxt


def normalise_series(
    z: np.ndarray, mode: str, window: int, nstat: np.ndarray | None = None
) -> np.ndarray:
    """Per-stream normalisation of one stream's model-normalised features.

    z : (T, F) float32 in time order, NaN = missing (stays NaN). Returns (T, F)
    float32 ``z'``, exactly what the detector computes for these events when
    they are the stream's first (``nstat=None``), or continuing from a
    (1, N_NSTAT, F) float64 state, updated in place. ``mode`` "off" returns a
    copy of ``z``.

    >>> z = np.array([[1.0], [3.0], [5.0], [np.nan]], np.float32)
    >>> normalise_series(z, "warmup", 2).ravel().tolist()  # frozen after 2 values
    [0.0, 1.0, 3.0, nan]
    """
    return normalise_series_targets(z, mode, window, nstat)[0]


def normalise_series_targets(
    z: np.ndarray, mode: str, window: int, nstat: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`normalise_series` and the forecast targets: (z', y), y (T, F) float32
    with ``y[t]`` = event t + 1's value standardised with the statistics after
    event t, the units the detector reads the forecast made at t in (with the
    scale after event t + 1 while the feature has not varied; NaN for the last
    event and for missing values). With ``mode`` "off", ``y[t] = z[t + 1]``."""
    if mode not in MODES:
        raise ValueError(f"stream_norm is {mode!r}, expected one of {', '.join(MODES)}")
    zz = np.ascontiguousarray(z, np.float32)
    if zz.ndim != 2:
        raise ValueError(f"z has shape {zz.shape}, expected (events, features)")
    if MODES[mode] == MODE_OFF:
        y = np.full_like(zz, np.nan)
        y[:-1] = zz[1:]
        return zz.copy(), y
    if window < 1:
        raise ValueError(f"norm_window is {window}, expected >= 1")
    if nstat is None:
        nstat = np.zeros((1, N_NSTAT, zz.shape[1]), np.float64)
    elif nstat.shape != (1, N_NSTAT, zz.shape[1]) or nstat.dtype != np.float64:
        raise ValueError(f"nstat has shape {nstat.shape}, expected (1, {N_NSTAT}, {zz.shape[1]})")
    return _normalise_series(zz, MODES[mode], float(window), nstat)
