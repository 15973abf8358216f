"""Synthetic sensor fleet with labelled anomalies, for tests, training tests and the live demo.

Signal model
------------
Every stream ``s`` (a sensor) has channels ``f`` (features, e.g. temp, pressure, flow,
vibration). In normalised units each channel is::

    z[s, t, f] = load[s, f] * driver[s, t] + mix[s, f] * local[s, t] + noise * eps[s, t, f]
    driver[s, t] = season[s, t] + latent[s, t]
    season[s, t] = a_d sin(w_d t + p_d) + a_h sin(2 w_d t + p_h) + a_w sin(w_w t + p_w)

and the value seen is ``values[s, t, f] = level[s, f] + scale[s, f] * z[s, t, f]``.

* ``w_d``, ``w_w``: daily and weekly angular frequency of the *event time* in seconds, so the
  seasonality follows the wall clock whatever ``period_s`` is; ``a_d`` in 0.6-1.2, ``a_h``
  (12-hour harmonic) 0.1-0.4 of ``a_d``, ``a_w`` in 0.2-0.5, phases uniform, all per stream.
* ``latent``: slow AR(1), stationary std 0.5, time constant 60-240 steps per stream.
* ``local``: fast AR(1), stationary std 0.3, time constant 10-40 steps per stream.
* ``load``: 0.6-1.0 in magnitude, negative with probability 1/4; ``mix``: uniform in
  [-1, 1]. Both factors are shared by the channels of a stream with per-stream loadings, so
  channels are strongly but not perfectly correlated.
* ``eps``: white measurement noise, std ``FleetSpec.noise``.
* ``level``: log-uniform per stream in a per-feature range (temp 20-90, pressure 1-10,
  flow 10-500, vibration 0.2-5, anything else 1-100); ``scale`` is 3-15 % of the level. Streams
  therefore differ by an order of magnitude: normalise per stream.

AR time constants are in steps, not seconds, so the unpredictable part of a step (about
0.1 scale with the default noise) and hence how visible an anomaly is do not depend on
``period_s``.

Anomalies
---------
Magnitudes are in units of the channel's ``scale`` (``scale[s, f]`` above). For scale: the
one-step forecast error of a clean channel is about 0.1 scale (default noise) and its
standard deviation over a day or more 0.4-1.0 scale. So every kind but ``stuck`` is 3x to
40x the forecast error, while most are of the order of the channel's normal swings, where
a fixed threshold on the raw value misses many of them:

=================  ======================================================================
kind               effect inside the window (the window ends abruptly; after it the clean
                   signal resumes)
=================  ======================================================================
spike              +-2 to 4 scale on every step of a 1-3 step window (ignores min/max_len)
level_shift        constant offset of +-1 to 2 scale
drift              linear ramp from 0 to +-1.5 to 3 scale at the last step
variance_change    extra white noise of std 0.3 to 0.6 scale (3-6x the forecast error)
stuck              the value of the step before the window, repeated exactly
frequency_change   the seasonal part of the driver is held at its pre-window value and a
                   fast oscillation (period 8-30 steps, amplitude 0.75 to 1.5 scale, times
                   the loading) is added, starting continuously from the pre-window value
correlation_break  one channel decouples: its shared part (load * driver + mix * local) is
                   frozen at the pre-window value and it wanders on an independent AR(1)
                   (phi 0.9, stationary std 0.75 to 1.25 scale) instead
=================  ======================================================================

Every kind but ``correlation_break`` affects a random non-empty subset of channels;
``correlation_break`` affects exactly one and is left out of ``kinds`` for single-channel
fleets. Windows of one stream never overlap, are at least ``_MIN_GAP`` steps apart and never
start at step 0. ``stuck`` is the subtle one: values barely move within a window, so a
forecaster notices the missing noise rather than a large error.

Determinism
-----------
One seed feeds three independent generators (``numpy.random.SeedSequence(seed).spawn(3)``):
the clean signal, the anomalies, and the event shuffle. The clean signal is drawn in blocks
of ``_BLOCK`` steps whatever the consumer, so ``generate_fleet`` with anomalies equals
``generate_fleet`` with ``anomaly_rate=0`` outside the labelled windows, and
``stream_events`` reproduces the clean signal of ``generate_fleet`` step for step.

>>> fleet = generate_fleet(FleetSpec(n_streams=3, n_steps=100, seed=1))
>>> fleet.values.shape, fleet.values.dtype, fleet.keys[0]
((3, 100, 4), dtype('float32'), 'sensor-0000')

Length: the signal model and the seven anomaly kinds are one documented generator; the
docstring tables are a third of it.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
import numpy.typing as npt

from streamlstm.errors import ConfigError

__all__ = [
    "ALL_KINDS",
    "Anomaly",
    "Fleet",
    "FleetSpec",
    "generate_fleet",
    "stream_events",
]

ALL_KINDS: tuple[str, ...] = (
    "spike",
    "level_shift",
    "drift",
    "variance_change",
    "stuck",
    "frequency_change",
    "correlation_break",
)

EventBatch = tuple[
    npt.NDArray[np.object_],
    npt.NDArray[np.float64],
    npt.NDArray[np.float32],
    npt.NDArray[np.bool_],
]

_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
# Steps of clean signal drawn per block. Fixed so that every consumer (whole fleet, live
# stream) draws the random numbers in the same shapes and hence sees the same signal.
_BLOCK = 256
# Steps between two windows of one stream: keeps the recovery visible and guarantees the
# step before a window is clean (``stuck`` repeats it).
_MIN_GAP = 10
_SPIKE_MAX_LEN = 3
_LATENT_STD = 0.5
_LOCAL_STD = 0.3
# (low, high) of the per-stream level, drawn log-uniformly; scale is a fraction of it.
_LEVEL_RANGE = {
    "temp": (20.0, 90.0),
    "pressure": (1.0, 10.0),
    "flow": (10.0, 500.0),
    "vibration": (0.2, 5.0),
}
_DEFAULT_LEVEL_RANGE = (1.0, 100.0)


@dataclass(frozen=True)
class Anomaly:
    """One injected anomaly: ``start`` and ``end`` are the event times (s) of its first and
    last anomalous step, both inclusive."""

    key: str
    kind: str
    start: float
    end: float
    features: tuple[str, ...]


@dataclass(frozen=True)
class FleetSpec:
    """What fleet to generate; validated on construction (raises ``ConfigError``).

    ``anomaly_rate`` is the expected number of anomalies per stream per ``n_steps`` steps
    (0 gives a clean fleet for training); ``noise`` is the std of the white measurement noise
    in units of the channel scale; ``min_len``/``max_len`` bound window lengths in steps.
    """

    n_streams: int = 20
    n_steps: int = 2000
    period_s: float = 60.0
    start_time: float = 1_700_000_000.0
    features: tuple[str, ...] = ("temp", "pressure", "flow", "vibration")
    noise: float = 0.05
    anomaly_rate: float = 1.0
    kinds: tuple[str, ...] = ALL_KINDS
    min_len: int = 5
    max_len: int = 60
    key_prefix: str = "sensor-"
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, found: object, expected: str) -> ConfigError:
            return ConfigError(f"FleetSpec.{name}: found {found!r}, expected {expected}")

        if self.n_streams < 1:
            raise bad("n_streams", self.n_streams, "an integer >= 1")
        if self.n_steps < 1:
            raise bad("n_steps", self.n_steps, "an integer >= 1")
        if not self.period_s > 0:
            raise bad("period_s", self.period_s, "a positive number of seconds")
        if not self.features or len(set(self.features)) != len(self.features):
            raise bad("features", self.features, "a non-empty tuple of distinct names")
        if not self.noise >= 0:
            raise bad("noise", self.noise, "a number >= 0")
        if not self.anomaly_rate >= 0:
            raise bad("anomaly_rate", self.anomaly_rate, "a number >= 0 (0 = clean fleet)")
        unknown = [k for k in self.kinds if k not in ALL_KINDS]
        if unknown:
            raise bad("kinds", unknown, f"names from {ALL_KINDS}")
        if self.anomaly_rate > 0 and not self.active_kinds:
            raise bad("kinds", self.kinds, "at least one kind usable with these features")
        if not 1 <= self.min_len <= self.max_len:
            raise bad("min_len/max_len", (self.min_len, self.max_len), "1 <= min_len <= max_len")

    @property
    def active_kinds(self) -> tuple[str, ...]:
        """``kinds`` without ``correlation_break`` when there is only one channel."""
        if len(self.features) > 1:
            return self.kinds
        return tuple(k for k in self.kinds if k != "correlation_break")

    @property
    def keys(self) -> list[str]:
        """Stream keys, zero-padded so that sorting them sorts by stream id."""
        width = max(4, len(str(self.n_streams - 1)))
        return [f"{self.key_prefix}{i:0{width}d}" for i in range(self.n_streams)]


@dataclass(eq=False)
class Fleet:
    """A generated fleet. ``labels[s, t]`` is True inside an injected anomaly of stream ``s``.

    ``seed`` only seeds the shuffle of ``events(order="shuffled_within_time")``.
    """

    keys: list[str]
    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float32]
    labels: npt.NDArray[np.bool_]
    anomalies: list[Anomaly]
    features: tuple[str, ...]
    seed: int = 0

    def events(self, order: str = "time") -> EventBatch:
        """Interleave the streams into one event stream ``(keys, times, X, label)``.

        ``keys``: (n,) object array of str; ``times``: (n,) float64; ``X``: (n, F) float32;
        ``label``: (n,) bool, with ``n = n_streams * n_steps``. ``order`` is ``"time"``
        (by time, then stream id), ``"shuffled_within_time"`` (by time, streams in a seeded
        random order within each timestamp) or ``"stream"`` (each stream's events in turn).
        """
        n_streams, n_steps, _ = self.values.shape
        if order == "time":
            sid = np.tile(np.arange(n_streams), n_steps)
            tid = np.repeat(np.arange(n_steps), n_streams)
        elif order == "shuffled_within_time":
            rng = np.random.default_rng(_seed_sequences(self.seed)[2])
            sid = np.argsort(rng.random((n_steps, n_streams)), axis=1).reshape(-1)
            tid = np.repeat(np.arange(n_steps), n_streams)
        elif order == "stream":
            sid = np.repeat(np.arange(n_streams), n_steps)
            tid = np.tile(np.arange(n_steps), n_streams)
        else:
            raise ValueError(
                f"order: found {order!r}, expected 'time', 'shuffled_within_time' or 'stream'"
            )
        keys = np.asarray(self.keys, dtype=object)[sid]
        return keys, self.times[tid], self.values[sid, tid], self.labels[sid, tid]

    def windows(self) -> dict[str, list[tuple[float, float]]]:
        """Every stream key -> ``(start, end)`` times (inclusive) of its anomalies, by start."""
        out: dict[str, list[tuple[float, float]]] = {k: [] for k in self.keys}
        for a in self.anomalies:
            out[a.key].append((a.start, a.end))
        for spans in out.values():
            spans.sort()
        return out

    def kind_labels(self) -> npt.NDArray[np.object_]:
        """(n_streams, n_steps) object: the anomaly kind at each step, "" outside anomalies."""
        out = np.full(self.labels.shape, "", dtype=object)
        row = {k: i for i, k in enumerate(self.keys)}
        for a in self.anomalies:
            lo, hi = np.searchsorted(self.times, [a.start, a.end], side="left")
            out[row[a.key], lo : hi + 1] = a.kind
        return out

    def write_labels(self, path: str | os.PathLike[str]) -> None:
        """Write the windows as ``streamlstm evaluate --labels`` reads them, with kinds.

        ``{key: [[start, end, kind], ...]}``, times in epoch seconds; every stream
        is listed, an empty list when it has no anomaly.
        """
        out: dict[str, list[list[float | str]]] = {k: [] for k in self.keys}
        for a in sorted(self.anomalies, key=lambda a: (a.key, a.start)):
            out[a.key].append([a.start, a.end, a.kind])
        lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in out.items()]
        with open(path, "w", encoding="utf-8") as fh:  # one line per stream
            fh.write("{\n" + ",\n".join(lines) + "\n}\n")

    def write_csv(
        self,
        path: str | os.PathLike[str],
        key_col: str = "machine",
        time_col: str = "ts",
        label_col: str | None = "label",
        label_kinds: bool = False,
    ) -> None:
        """Write one row per event in time order; gzip-compressed if ``path`` ends in ``.gz``.

        Header ``key_col, time_col, *features[, label_col]``. Times are written with
        ``repr`` and values with 9 significant digits, so both read back bit-exact (values
        after casting to float32); labels are 0/1, or with ``label_kinds`` the anomaly's
        kind name inside an anomaly and 0 outside (what ``streamlstm evaluate
        --label-column`` reads as kinds). 0/1 stays the default because readers that
        parse the column as a number exist. Meant for small fleets (Python loop).
        """
        fh: IO[str]
        if os.fspath(path).endswith(".gz"):
            fh = gzip.open(path, "wt", newline="", encoding="utf-8")
        else:
            fh = open(path, "w", newline="", encoding="utf-8")
        with fh:
            writer = csv.writer(fh, lineterminator="\n")
            header = [key_col, time_col, *self.features]
            writer.writerow(header if label_col is None else [*header, label_col])
            kinds = self.kind_labels() if label_kinds else None
            for t, ts in enumerate(self.times.tolist()):
                t_str = repr(ts)
                rows = self.values[:, t, :].tolist()
                labels: list[object] = self.labels[:, t].tolist()
                if kinds is not None:
                    labels = [k or "0" for k in kinds[:, t].tolist()]
                for key, row, lab in zip(self.keys, rows, labels, strict=True):
                    out = [key, t_str, *(f"{v:.9g}" for v in row)]
                    if label_col is not None:
                        out.append(lab if isinstance(lab, str) else ("1" if lab else "0"))
                    writer.writerow(out)


def _seed_sequences(seed: int) -> list[np.random.SeedSequence]:
    """Children for: clean signal, anomalies, event shuffle."""
    return np.random.SeedSequence(seed).spawn(3)


@dataclass
class _Block:
    """``_BLOCK`` steps of clean signal, time-major: ``season``, ``driver``, ``local``
    (C, S) float32, ``values`` (C, S, F) float32. Valid until the next ``next_block()``."""

    times: npt.NDArray[np.float64]
    season: npt.NDArray[np.float32]
    driver: npt.NDArray[np.float32]
    local: npt.NDArray[np.float32]
    values: npt.NDArray[np.float32]


class _CleanSignal:
    """Per-stream parameters and AR states; ``next_block()`` continues the clean signal."""

    def __init__(self, spec: FleetSpec, rng: np.random.Generator) -> None:
        n, nf = spec.n_streams, len(spec.features)
        self._spec = spec
        self._rng = rng
        self._step = 0
        lo_hi = np.array([_LEVEL_RANGE.get(f, _DEFAULT_LEVEL_RANGE) for f in spec.features])
        level = np.exp(rng.uniform(np.log(lo_hi[:, 0]), np.log(lo_hi[:, 1]), (n, nf)))
        self.level = level.astype(np.float32)
        self.scale = (level * rng.uniform(0.03, 0.15, (n, nf))).astype(np.float32)
        sign = np.where(rng.random((n, nf)) < 0.25, -1.0, 1.0)
        self.load = (sign * rng.uniform(0.6, 1.0, (n, nf))).astype(np.float32)
        self.mix = rng.uniform(-1.0, 1.0, (n, nf)).astype(np.float32)
        amp_d = rng.uniform(0.6, 1.2, n)
        amp = np.stack([amp_d, amp_d * rng.uniform(0.1, 0.4, n), rng.uniform(0.2, 0.5, n)])
        phase = rng.uniform(0.0, 2 * np.pi, (3, n))
        # sin(w t + p) = sin(w t) cos(p) + cos(w t) sin(p): two outer products per term
        # instead of a sine per (step, stream).
        self._sin_coef = (amp * np.cos(phase)).astype(np.float32)
        self._cos_coef = (amp * np.sin(phase)).astype(np.float32)
        self._phi_latent = np.exp(-1.0 / rng.uniform(60.0, 240.0, n)).astype(np.float32)
        self._phi_local = np.exp(-1.0 / rng.uniform(10.0, 40.0, n)).astype(np.float32)
        self._latent = (_LATENT_STD * rng.standard_normal(n)).astype(np.float32)
        self._local = (_LOCAL_STD * rng.standard_normal(n)).astype(np.float32)
        # level + scale * z, folded into per-channel coefficients of each term.
        self._noise_coef = (self.scale * np.float32(spec.noise)).astype(np.float32)
        self._load_coef = self.scale * self.load
        self._mix_coef = self.scale * self.mix
        # Reused across blocks: fresh 10k-stream blocks cost more in page faults than in maths.
        self._values = np.empty((_BLOCK, n, nf), dtype=np.float32)
        self._tmp = np.empty((_BLOCK, n, nf), dtype=np.float32)

    def next_block(self) -> _Block:
        spec, rng = self._spec, self._rng
        n, c = spec.n_streams, _BLOCK
        steps = np.arange(self._step, self._step + c, dtype=np.float64)
        times = spec.start_time + spec.period_s * steps
        self._step += c

        # Phases from time modulo the period: keeps full precision at epoch ~1.7e9 s.
        day = (2 * np.pi / _DAY_S) * np.mod(times, _DAY_S)
        week = (2 * np.pi / _WEEK_S) * np.mod(times, _WEEK_S)
        season = np.zeros((c, n), dtype=np.float32)
        for i, angle in enumerate((day, 2 * day, week)):
            season += np.outer(np.sin(angle).astype(np.float32), self._sin_coef[i])
            season += np.outer(np.cos(angle).astype(np.float32), self._cos_coef[i])

        latent = _ar1(self._latent, self._phi_latent, _LATENT_STD, rng)
        local = _ar1(self._local, self._phi_local, _LOCAL_STD, rng)
        self._latent, self._local = latent[-1].copy(), local[-1].copy()
        driver = season + latent

        values, tmp = self._values, self._tmp
        rng.standard_normal(dtype=np.float32, out=values)
        values *= self._noise_coef
        values += np.multiply(driver[:, :, None], self._load_coef, out=tmp)
        values += np.multiply(local[:, :, None], self._mix_coef, out=tmp)
        values += self.level
        return _Block(times, season, driver, local, values)


def _ar1(
    state: npt.NDArray[np.float32],
    phi: npt.NDArray[np.float32],
    std: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """(``_BLOCK``, S) float32 path of ``x[t] = phi x[t-1] + std sqrt(1 - phi^2) e[t]``
    continuing from ``state`` (S,), so the stationary std is ``std``."""
    x = rng.standard_normal((_BLOCK, state.shape[0]), dtype=np.float32)
    x *= (std * np.sqrt(1.0 - phi.astype(np.float64) ** 2)).astype(np.float32)
    x[0] += phi * state
    for t in range(1, _BLOCK):
        x[t] += phi * x[t - 1]
    return x


_SPIKE, _LEVEL, _DRIFT, _VARIANCE, _STUCK, _FREQUENCY, _CORRELATION = range(len(ALL_KINDS))


@dataclass
class _Plans:
    """Randomly drawn anomalies, one row each: kind (index into ALL_KINDS), length in
    steps, affected channels (m, F) bool, and uniforms for their magnitudes."""

    kind: npt.NDArray[np.intp]
    length: npt.NDArray[np.intp]
    mask: npt.NDArray[np.bool_]
    mag: npt.NDArray[np.float64]  # (m, F) in [0, 1)
    sign: npt.NDArray[np.float64]  # (m, F) +-1
    extra: npt.NDArray[np.float64]  # (m, 2) in [0, 1), per-anomaly scalars

    def __getitem__(self, rows: npt.NDArray[np.bool_]) -> _Plans:
        return _Plans(*(getattr(self, f)[rows] for f in _PLANS_FIELDS))


_PLANS_FIELDS = ("kind", "length", "mask", "mag", "sign", "extra")


def _draw_plans(rng: np.random.Generator, spec: FleetSpec, m: int) -> _Plans:
    nf = len(spec.features)
    if m == 0:
        empty = np.empty(0, dtype=np.intp)
        no = np.empty((0, nf))
        return _Plans(empty, empty, no.astype(bool), no, no, np.empty((0, 2)))
    active = np.array([ALL_KINDS.index(k) for k in spec.active_kinds], dtype=np.intp)
    kind = active[rng.integers(0, len(active), m)]
    spike_len = rng.integers(1, _SPIKE_MAX_LEN + 1, m)
    length = np.where(kind == _SPIKE, spike_len, rng.integers(spec.min_len, spec.max_len + 1, m))
    n_affected = np.where(kind == _CORRELATION, 1, rng.integers(1, nf + 1, m))
    rank = np.argsort(np.argsort(rng.random((m, nf)), axis=1), axis=1)
    mask = rank < n_affected[:, None]
    sign = np.where(rng.random((m, nf)) < 0.5, -1.0, 1.0)
    return _Plans(kind, length.astype(np.intp), mask, rng.random((m, nf)), sign, rng.random((m, 2)))


def _ranges(lengths: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Flatten windows: for each of ``sum(lengths)`` entries, its window and 0-based offset."""
    which = np.repeat(np.arange(len(lengths), dtype=np.intp), lengths)
    first = np.cumsum(lengths) - lengths
    return which, np.arange(len(which), dtype=np.intp) - first[which]


def _anomalous(
    rng: np.random.Generator,
    plans: _Plans,
    coefs: tuple[npt.NDArray[np.float32], ...],
    seg: npt.NDArray[np.float32],
    prev: npt.NDArray[np.float32],
    taps: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Anomalous values of all windows at once, for every channel (the caller keeps the clean
    value where ``plans.mask`` is False). Magnitudes are documented in the module docstring.

    ``coefs``: (scale, load, mix) of each window's stream, (m, F) each. ``seg``: (E, F)
    clean values of the window steps, ``E = sum(plans.length)``, window after window.
    ``prev``: (m, F) values of the step before each window. ``taps``: (3, m + E) season,
    driver and local of each window's steps preceded by its step before.
    """
    scale, load, mix = (c.astype(np.float64) for c in coefs)
    length = plans.length
    win, off = _ranges(length)
    tap = np.cumsum(length + 1) - (length + 1)  # tap index of the step before each window
    kind = plans.kind[win]
    step = (off + 1).astype(np.float64)  # 1 on the first anomalous step
    mag, sign = plans.mag[win], plans.sign[win]
    delta = np.zeros(seg.shape)

    def rows(k: int) -> npt.NDArray[np.intp]:
        return np.flatnonzero(kind == k)

    e = rows(_SPIKE)
    delta[e] = sign[e] * (2.0 + 2.0 * mag[e])
    e = rows(_LEVEL)
    delta[e] = sign[e] * (1.0 + 1.0 * mag[e])
    e = rows(_DRIFT)
    delta[e] = sign[e] * (1.5 + 1.5 * mag[e]) * (step[e] / length[win[e]])[:, None]
    e = rows(_VARIANCE)
    delta[e] = (0.3 + 0.3 * mag[e]) * rng.standard_normal((len(e), seg.shape[1]))

    e = rows(_FREQUENCY)
    w = win[e]
    period, amp = 8.0 + 22.0 * plans.extra[w, 0], 0.75 + 0.75 * plans.extra[w, 1]
    season_now = taps[0, tap[w] + off[e] + 1].astype(np.float64)
    new_season = taps[0, tap[w]] + amp * np.sin(2 * np.pi * step[e] / period)
    delta[e] = load[w] * (new_season - season_now)[:, None]

    e = rows(_CORRELATION)
    w = win[e]
    broken = np.flatnonzero(plans.kind == _CORRELATION)
    if len(broken):
        # Independent AR(1) per window, phi 0.9, computed over the longest such window.
        std = 0.75 + 0.5 * plans.extra[broken, 0]
        innov = rng.standard_normal((len(broken), int(length[broken].max())))
        wander = innov * (std * math.sqrt(1.0 - 0.9**2))[:, None]
        for t in range(1, wander.shape[1]):
            wander[:, t] += 0.9 * wander[:, t - 1]
        slot = np.empty(len(length), dtype=np.intp)
        slot[broken] = np.arange(len(broken))
        now, before = tap[w] + off[e] + 1, tap[w]
        shared_now = load[w] * taps[1, now, None] + mix[w] * taps[2, now, None]
        shared_before = load[w] * taps[1, before, None] + mix[w] * taps[2, before, None]
        delta[e] = wander[slot[w], off[e], None] - (shared_now - shared_before)

    new = seg + scale[win] * delta
    e = rows(_STUCK)
    new[e] = prev[win[e]]
    return new.astype(np.float32)


def generate_fleet(spec: FleetSpec) -> Fleet:
    """Generate ``spec.n_streams`` streams of ``spec.n_steps`` steps with labelled anomalies.

    Each stream gets a Poisson(``anomaly_rate``) number of windows, dropping the last ones
    of a stream if they do not fit. Outside the windows the values equal those of the same
    spec with ``anomaly_rate=0``, bit for bit.
    """
    n, n_steps, nf = spec.n_streams, spec.n_steps, len(spec.features)
    base_ss, anom_ss, _ = _seed_sequences(spec.seed)

    # Plan first (the anomaly generator never sees the signal), so that the generation loop
    # keeps only the window steps of season/driver/local instead of three (T, S) arrays.
    rng = np.random.default_rng(anom_ss)
    stream, start, plans = _plan_fleet(rng, spec)
    tap_win, tap_off = _ranges(plans.length + 1)
    tap_step = start[tap_win] - 1 + tap_off
    tap_stream = stream[tap_win]
    taps = np.empty((3, len(tap_win)), dtype=np.float32)

    sig = _CleanSignal(spec, np.random.default_rng(base_ss))
    times = np.empty(n_steps, dtype=np.float64)
    values = np.empty((n, n_steps, nf), dtype=np.float32)
    for lo in range(0, n_steps, _BLOCK):
        block = sig.next_block()
        hi = min(lo + _BLOCK, n_steps)
        times[lo:hi] = block.times[: hi - lo]
        values[:, lo:hi] = block.values[: hi - lo].transpose(1, 0, 2)
        sel = np.flatnonzero((tap_step >= lo) & (tap_step < hi))
        for row, part in enumerate((block.season, block.driver, block.local)):
            taps[row, sel] = part[tap_step[sel] - lo, tap_stream[sel]]

    win, off = _ranges(plans.length)
    e_stream, e_step = stream[win], start[win] + off
    seg = values[e_stream, e_step]
    coefs = (sig.scale[stream], sig.load[stream], sig.mix[stream])
    new = _anomalous(rng, plans, coefs, seg, values[stream, start - 1], taps)
    values[e_stream, e_step] = np.where(plans.mask[win], new, seg)
    labels = np.zeros((n, n_steps), dtype=bool)
    labels[e_stream, e_step] = True

    keys, t = spec.keys, times.tolist()
    end = start + plans.length - 1
    anomalies = [
        Anomaly(keys[s], ALL_KINDS[k], t[a], t[b], _names(spec.features, mask))
        for s, k, a, b, mask in zip(
            stream.tolist(),
            plans.kind.tolist(),
            start.tolist(),
            end.tolist(),
            plans.mask.tolist(),
            strict=True,
        )
    ]
    anomalies.sort(key=lambda x: (x.start, x.key))
    return Fleet(keys, times, values, labels, anomalies, spec.features, seed=spec.seed)


def _names(features: tuple[str, ...], mask: list[bool]) -> tuple[str, ...]:
    return tuple(f for f, m in zip(features, mask, strict=True) if m)


def _plan_fleet(
    rng: np.random.Generator, spec: FleetSpec
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], _Plans]:
    """Streams, start steps and plans of all windows of a fleet, grouped by stream.

    A stream's windows lie in ``[1, n_steps)`` in drawn order, ``_MIN_GAP`` or more apart,
    with the free steps spread by sorted uniform offsets."""
    n, n_steps = spec.n_streams, spec.n_steps
    counts = rng.poisson(spec.anomaly_rate, n) if spec.anomaly_rate > 0 else np.zeros(n, int)
    stream = np.repeat(np.arange(n, dtype=np.intp), counts)
    plans = _draw_plans(rng, spec, len(stream))

    def before_in_stream(
        stream: npt.NDArray[np.intp], need: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.intp]:
        """Sum of ``need`` over the earlier windows of the same stream."""
        excl = np.cumsum(need) - need
        group_first = np.searchsorted(stream, stream)
        return excl - excl[group_first]

    need = plans.length + _MIN_GAP
    fits = before_in_stream(stream, need) + plans.length <= n_steps - 1
    stream, plans = stream[fits], plans[fits]
    need = plans.length + _MIN_GAP
    before = before_in_stream(stream, need)
    used = np.bincount(stream, weights=need, minlength=n).astype(np.intp) - _MIN_GAP
    free = (n_steps - 1 - used)[stream]
    offset = rng.integers(0, free + 1)
    offset = offset[np.lexsort((offset, stream))]
    return stream, 1 + offset + before, plans


def stream_events(
    spec: FleetSpec,
    n_steps: int | None = None,
    *,
    on_anomaly: Callable[[Anomaly], None] | None = None,
) -> Iterator[EventBatch]:
    """Yield the fleet one timestep at a time: ``(keys, times, X, labels)`` with shapes
    (S,) object, (S,) float64, (S, F) float32, (S,) bool; forever if ``n_steps`` is None.

    The clean signal is that of ``generate_fleet(spec)`` (and continues past
    ``spec.n_steps``). Anomalies are planned online: each idle stream starts one with
    probability ``anomaly_rate / spec.n_steps`` per step, so about ``anomaly_rate`` land in
    every ``spec.n_steps`` steps, but at other places than in ``generate_fleet``.
    ``on_anomaly`` is called with each anomaly before its first step is yielded.
    Deterministic given ``spec.seed``; the arrays yielded are the caller's.
    """
    n, nf = spec.n_streams, len(spec.features)
    base_ss, anom_ss, _ = _seed_sequences(spec.seed)
    sig = _CleanSignal(spec, np.random.default_rng(base_ss))
    rng = np.random.default_rng(anom_ss)
    keys = spec.keys
    key_arr = np.asarray(keys, dtype=object)
    p_start = min(1.0, spec.anomaly_rate / spec.n_steps)
    lookahead = max(spec.max_len, _SPIKE_MAX_LEN)

    # Time-major buffers; row 0 holds step ``g0``. A window starting at step g rewrites rows
    # up to g + lookahead and reads row g - 1, so both stay buffered.
    g0 = 0
    times = np.empty(0, dtype=np.float64)
    values = np.empty((0, n, nf), dtype=np.float32)
    parts = np.empty((3, 0, n), dtype=np.float32)  # season, driver, local
    labels = np.empty((0, n), dtype=bool)
    free_from = np.ones(n, dtype=np.int64)  # first step at which a stream may start one

    g = 0
    while n_steps is None or g < n_steps:
        while g0 + len(times) <= g + lookahead:
            b = sig.next_block()
            times = np.concatenate([times, b.times])
            values = np.concatenate([values, b.values])
            parts = np.concatenate([parts, np.stack([b.season, b.driver, b.local])], axis=1)
            labels = np.concatenate([labels, np.zeros((_BLOCK, n), dtype=bool)])
        r = g - g0
        if p_start > 0:
            stream = np.flatnonzero((rng.random(n) < p_start) & (free_from <= g))
            if len(stream):
                plans = _draw_plans(rng, spec, len(stream))
                tap_win, tap_off = _ranges(plans.length + 1)
                taps = parts[:, r - 1 + tap_off, stream[tap_win]]
                win, off = _ranges(plans.length)
                e_row, e_stream = r + off, stream[win]
                seg = values[e_row, e_stream]
                coefs = (sig.scale[stream], sig.load[stream], sig.mix[stream])
                new = _anomalous(rng, plans, coefs, seg, values[r - 1, stream], taps)
                values[e_row, e_stream] = np.where(plans.mask[win], new, seg)
                labels[e_row, e_stream] = True
                free_from[stream] = g + plans.length + _MIN_GAP
                if on_anomaly is not None:
                    for i, s in enumerate(stream.tolist()):
                        kind = ALL_KINDS[plans.kind[i]]
                        end = float(times[r + plans.length[i] - 1])
                        names = _names(spec.features, plans.mask[i].tolist())
                        on_anomaly(Anomaly(keys[s], kind, float(times[r]), end, names))
        yield key_arr.copy(), np.full(n, times[r]), values[r].copy(), labels[r].copy()
        g += 1
        if r > _BLOCK:  # drop consumed rows, keeping step g - 1
            g0 += r
            times, values, parts, labels = times[r:], values[r:], parts[:, r:], labels[r:]
