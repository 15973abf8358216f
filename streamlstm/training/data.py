"""Training data: events grouped into time-ordered streams, split, normalised.

Decisions (an operator's expectations, written down):

- **One model for the whole fleet.** Events of every stream train the same
  weights; each stream keeps its own state, exactly as in the detector.
- **Time-ordered validation split per stream**: the events in the last
  ``val_fraction`` of each stream's own time range are held out. A stream
  with fewer than :data:`MIN_VAL_EVENTS` held-out events or fewer than
  :data:`MIN_TRAIN_EVENTS` training events is used only for training.
- **Normalisation** per feature (``(x - mean) / std``) is fitted on the
  training part only, ignoring NaN; a constant feature gets std 1.
- **Missing values** stay NaN: the kernels impute them with the forecast,
  as the detector does at scoring time, and absent targets carry no loss.
  An event with every feature missing is dropped, as the detector rejects
  it (and the next event's time gap counts from the last accepted one).
- **Per-stream normalisation** (``stream_norm``): each stream's normalised
  features are then re-standardised with its own running statistics, from
  its first event on, by the detector's definition
  (:func:`streamlstm.kernels.norm.normalise_series`), so every event is
  trained on the value the detector will feed the model for it, and each
  forecast's target is the next value standardised with the statistics its
  input was (``Stream.yn``), as the detector reads the forecast. History that
  does not start at the stream's first event (fine-tuning on recent events)
  starts from the statistics the detector holds for the stream
  (``stream_stats``), which is exact once they are frozen.
- **Time input** (``time_input``): ``(log1p(dt) - dt_mean) / dt_std`` with
  ``dt`` the seconds since the stream's previous event (0 for its first),
  the same value the detector computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamlstm.errors import InputError
from streamlstm.kernels.norm import N_NSTAT, normalise_series_targets

MIN_TRAIN_EVENTS = 3
MIN_VAL_EVENTS = 2
_MIN_STD = 1e-6  # below this a feature is constant: std 1 avoids dividing noise by ~0


@dataclass
class Stream:
    """One stream's events in time order: xn (n, I) float32 normalised inputs
    (features then the optional time column, NaN = missing feature),
    ``n_train`` events before the validation split."""

    key: str
    times: np.ndarray
    x: np.ndarray  # (n, F) float64 raw
    xn: np.ndarray  # (n, I) float32
    n_train: int
    # (n, F) float32 forecast targets when they are not simply the next row of xn
    # (per-stream normalisation: the next value in this event's units), else None
    yn: np.ndarray | None = None

    def targets(self) -> np.ndarray:
        """(n - 1, F) float32: the target of the forecast made at each event but the last."""
        if self.yn is not None:
            return self.yn[:-1]
        return self.xn[1:, : self.x.shape[1]]

    @property
    def n(self) -> int:
        return int(self.times.shape[0])


@dataclass
class Prepared:
    features: tuple[str, ...]
    streams: list[Stream]
    norm_mean: np.ndarray
    norm_std: np.ndarray
    time_input: bool
    dt_mean: float
    dt_std: float
    stream_norm: str = "off"
    norm_window: int = 0
    stream_stats: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (N_NSTAT, F)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def drop_targets(self, names: Sequence[str]) -> None:
        """Make features ``names`` inputs only: their targets become missing, so the
        training loss, the validation loss and the last-value baseline count the scored
        features alone (a command channel's next pulse is not the model's to forecast,
        and forecasting it took the loss: a synthetic telemetry channel driven by eight
        command pulses trained to normalised MSE 0.79, nearly all of it the commands')."""
        idx = [self.features.index(n) for n in names]
        if not idx:
            return
        n_feat = self.n_features
        for s in self.streams:
            if s.yn is None:
                yn = np.full((s.n, n_feat), np.nan, np.float32)
                yn[:-1] = s.xn[1:, :n_feat]
                s.yn = yn
            else:
                s.yn = s.yn.copy()
            s.yn[:, idx] = np.nan

    @property
    def n_train_events(self) -> int:
        return sum(s.n_train for s in self.streams)

    @property
    def n_val_events(self) -> int:
        return sum(s.n - s.n_train for s in self.streams)


def group_streams(
    keys: Sequence[str] | np.ndarray, times: np.ndarray, x: np.ndarray, n_features: int
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Split events by key (streams sorted by key, so the input order does not matter),
    each stream sorted by time (stable)."""
    keys_a = np.asarray(keys, dtype=object)
    times = np.asarray(times, np.float64)
    x = np.asarray(x, np.float64)
    n = keys_a.shape[0]
    if times.shape != (n,):
        raise InputError(f"times have shape {times.shape}, expected ({n},)")
    if x.shape != (n, n_features):
        raise InputError(f"features have shape {x.shape}, expected ({n}, {n_features})")
    if n and not np.all(np.isfinite(times)):
        raise InputError("event times must be finite; drop or fix the rows with bad times")
    if np.isinf(x).any():
        raise InputError("features contain +-Inf; replace them with empty cells (missing)")
    # The detector rejects an event with every feature missing (outcome "missing") and
    # never feeds it to the cell; training must not either, or the states diverge.
    keep = ~np.isnan(x).all(axis=1)
    if not keep.all():
        keys_a, times, x = keys_a[keep], times[keep], x[keep]
        n = keys_a.shape[0]
    uniq, inv = np.unique(keys_a.astype(str), return_inverse=True)
    order = np.lexsort((np.arange(n), times, inv))
    bounds = np.searchsorted(inv[order], np.arange(len(uniq) + 1))
    out = []
    for u in range(len(uniq)):
        idx = order[bounds[u] : bounds[u + 1]]
        out.append((str(uniq[u]), times[idx], x[idx]))
    return out


def log_dt(times: np.ndarray) -> np.ndarray:
    """log1p of the seconds since the previous event (0 for the first), float64."""
    dt = np.zeros(times.shape[0])
    dt[1:] = np.maximum(np.diff(times), 0.0)
    return np.log1p(dt)


def split_index(times: np.ndarray, val_fraction: float) -> int:
    """Index of the first validation event: the last ``val_fraction`` of the time range."""
    n = times.shape[0]
    if val_fraction <= 0 or n == 0:
        return n
    t0, t1 = float(times[0]), float(times[-1])
    if t1 > t0:
        cut = t0 + (1.0 - val_fraction) * (t1 - t0)
        k = int(np.searchsorted(times, cut, side="left"))
    else:
        k = int(math.ceil((1.0 - val_fraction) * n))
    if k < MIN_TRAIN_EVENTS or n - k < MIN_VAL_EVENTS:
        return n
    return k


def prepare(
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    val_fraction: float,
    time_input: bool,
    norm: tuple[np.ndarray, np.ndarray, float, float] | None = None,
    stream_norm: tuple[str, int] = ("off", 0),
    stream_stats: Mapping[str, np.ndarray] | None = None,
) -> Prepared:
    """Group, split and normalise. ``norm`` = (mean, std, dt_mean, dt_std) to reuse
    a model's normalisation (fine-tuning) instead of fitting it; ``stream_norm`` =
    (mode, window) of the per-stream normalisation on top (see the module doc),
    starting from ``stream_stats[key]`` ((N_NSTAT, F) float64, the detector's
    ``nstat`` row) for the streams it names."""
    seeds = {
        k: np.array(v, np.float64).reshape(1, N_NSTAT, len(features))
        for k, v in (stream_stats or {}).items()
    }
    features = tuple(features)
    if not features:
        raise InputError("no features given")
    raw = group_streams(keys, times, x, len(features))
    if not raw:
        raise InputError("no events to train on")
    splits = [split_index(t, val_fraction) for _, t, _ in raw]
    if norm is None:
        train_x = np.concatenate([xs[:k] for (_, _, xs), k in zip(raw, splits, strict=True)])
        with np.errstate(invalid="ignore"):
            cnt = np.sum(~np.isnan(train_x), axis=0)
        empty = [features[f] for f in range(len(features)) if cnt[f] == 0]
        if empty:
            raise InputError(f"feature(s) {', '.join(empty)} have no value in the training data")
        mean = np.nanmean(train_x, axis=0)
        std = np.nanstd(train_x, axis=0)
        std = np.where(std > _MIN_STD * np.maximum(1.0, np.abs(mean)), std, 1.0)
        if time_input:
            ld = np.concatenate([log_dt(t)[:k] for (_, t, _), k in zip(raw, splits, strict=True)])
            dt_mean = float(ld.mean())
            dt_std = float(ld.std())
            if not dt_std > _MIN_STD:
                dt_std = 1.0
        else:
            dt_mean, dt_std = 0.0, 1.0
    else:
        mean, std, dt_mean, dt_std = norm
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    streams = []
    for (key, t, xs), k in zip(raw, splits, strict=True):
        cols = [(xs - mean) / std]
        yn = None
        if stream_norm[0] != "off":
            # Start from the float32 values the detector computes (Model.normalise with
            # the model's float32 mean and std): in a fleet whose streams sit far apart,
            # a small stream spans few float32 steps and the rounding shows.
            with np.errstate(invalid="ignore"):
                z = ((xs - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)
            seed = seeds[key].copy() if key in seeds else None
            zs, yn = normalise_series_targets(z, stream_norm[0], stream_norm[1], seed)
            cols[0] = zs.astype(np.float64)
        if time_input:
            cols.append(((log_dt(t) - dt_mean) / dt_std)[:, None])
        xn = np.ascontiguousarray(np.concatenate(cols, axis=1), np.float32)
        streams.append(Stream(key, t, xs, xn, k, yn))
    return Prepared(
        features, streams, mean.astype(np.float32), std.astype(np.float32),
        time_input, float(dt_mean), float(dt_std), stream_norm[0], int(stream_norm[1]),
        {k: v[0] for k, v in seeds.items()} if stream_norm[0] != "off" else {},
    )  # fmt: skip


def flag_features(x: np.ndarray, names: Sequence[str]) -> tuple[str, ...]:
    """Features whose present values are all 0 or 1 (command channels, flags, one-hot
    columns): context inputs by default. None when every feature is one (then all are
    scored: a model must score something).

    >>> flag_features(np.array([[0.5, 1.0, 0.0], [0.7, 0.0, np.nan]]), ["temp", "cmd", "on"])
    ('cmd', 'on')
    """
    x = np.asarray(x, dtype=np.float64)
    present = np.isfinite(x)
    binary = np.all((x == 0.0) | (x == 1.0) | ~present, axis=0) & present.any(axis=0)
    out = tuple(n for n, b in zip(names, binary.tolist(), strict=True) if b)
    return () if len(out) == len(names) else out
