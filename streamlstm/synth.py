"""Synthetic sensor fleet with labelled anomalies, for tests, training tests and the live demo.

Signal model
------------
Every stream ``s`` (a sensor) has channels ``f`` (features, e.g. temp, pressure, flow,
vibration). In normalised units each channel is::

    z[s, t, f] = load[s, f] * driver[s, t] + idio[s, t, f] + noise * eps[s, t, f]
    driver[s, t] = season[s, t] + latent[s, t]
    season[s, t] = a_d sin(w_d t + p_d) + a_h sin(2 w_d t + p_h) + a_w sin(w_w t + p_w)

and the value seen is ``values[s, t, f] = level[s, f] + scale[s, f] * z[s, t, f]``.

* ``w_d``, ``w_w``: daily and weekly angular frequency of the *event time* in seconds, so the
  seasonality follows the wall clock whatever ``period_s`` is; ``a_d`` in 0.6-1.2, ``a_h``
  (12-hour harmonic) 0.1-0.4 of ``a_d``, ``a_w`` in 0.2-0.5, phases uniform, all per stream.
* ``latent``: AR(1), stationary std 0.5, time constant 60-240 steps per stream. Shared by all
  channels of a stream through ``load`` (0.6-1.0 in magnitude, negative with probability 1/4),
  so channels are strongly correlated.
* ``idio``: per-channel AR(1), stationary std 0.2, time constant 10-60 steps.
* ``eps``: white noise, std ``FleetSpec.noise``.
* ``level``: log-uniform per stream in a per-feature range (temp 20-90, pressure 1-10,
  flow 10-500, vibration 0.2-5, anything else 1-100); ``scale`` is 3-15 % of the level. Streams
  therefore differ by an order of magnitude: normalise per stream.

AR time constants are in steps, not seconds, so how much of a step is unpredictable (about
0.1 scale with the default noise) and hence how visible an anomaly is does not depend on
``period_s``. A clean channel has a standard deviation of roughly 0.6-1.1 ``scale``.

Anomalies
---------
Magnitudes are in units of the channel's ``scale`` (``scale[s, f]`` above), i.e. about one
standard deviation of the clean channel and about ten times the one-step forecast error:

=================  ======================================================================
kind               effect inside the window (the window ends abruptly; after it the clean
                   signal resumes)
=================  ======================================================================
spike              +-3 to 6 scale on every step of a 1-3 step window (ignores min/max_len)
level_shift        constant offset of +-1.5 to 3 scale
drift              linear ramp from 0 to +-2 to 4 scale at the last step
variance_change    extra white noise of std 0.4 to 0.8 scale (4-8x the forecast error)
stuck              the value of the step before the window, repeated exactly
frequency_change   the seasonal part of the driver is held at its pre-window value and a
                   fast oscillation (period 8-30 steps, amplitude 1 to 2 scale, times the
                   loading) is added, starting continuously from the pre-window value
correlation_break  one channel decouples: its share of the driver is frozen at the
                   pre-window value and it wanders on an independent AR(1) (phi 0.9,
                   stationary std 1 to 1.5 scale) instead
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
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
_IDIO_STD = 0.2
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


@dataclass
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
    seed: int = field(default=0)

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

    def write_csv(
        self,
        path: str | os.PathLike[str],
        key_col: str = "machine",
        time_col: str = "ts",
        label_col: str | None = "label",
    ) -> None:
        """Write one row per event in time order; gzip-compressed if ``path`` ends in ``.gz``.

        Header ``key_col, time_col, *features[, label_col]``. Times are written with
        ``repr`` and values with 9 significant digits, so both read back bit-exact (values
        after casting to float32); labels are 0/1. Meant for small fleets (Python loop).
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
            for t, ts in enumerate(self.times.tolist()):
                t_str = repr(ts)
                rows = self.values[:, t, :].tolist()
                labels = self.labels[:, t].tolist()
                for key, row, lab in zip(self.keys, rows, labels, strict=True):
                    out = [key, t_str, *(f"{v:.9g}" for v in row)]
                    if label_col is not None:
                        out.append("1" if lab else "0")
                    writer.writerow(out)


def _seed_sequences(seed: int) -> list[np.random.SeedSequence]:
    """Children for: clean signal, anomalies, event shuffle."""
    return np.random.SeedSequence(seed).spawn(3)


@dataclass
class _Block:
    """``_BLOCK`` steps of clean signal, time-major: season/driver (C, S), values (C, S, F)."""

    times: npt.NDArray[np.float64]
    season: npt.NDArray[np.float32]
    driver: npt.NDArray[np.float32]
    values: npt.NDArray[np.float32]


class _CleanSignal:
    """Per-stream parameters and AR states; ``next_block()`` continues the clean signal."""

    def __init__(self, spec: FleetSpec, rng: np.random.Generator) -> None:
        n, nf = spec.n_streams, len(spec.features)
        self._spec = spec
        self._rng = rng
        self._step = 0
        lo_hi = np.array([_LEVEL_RANGE.get(f, _DEFAULT_LEVEL_RANGE) for f in spec.features])
        log_level = rng.uniform(np.log(lo_hi[:, 0]), np.log(lo_hi[:, 1]), (n, nf))
        self.level = np.exp(log_level).astype(np.float32)
        self.scale = (self.level * rng.uniform(0.03, 0.15, (n, nf))).astype(np.float32)
        sign = np.where(rng.random((n, nf)) < 0.25, -1.0, 1.0)
        self.load = (sign * rng.uniform(0.6, 1.0, (n, nf))).astype(np.float32)
        amp_d = rng.uniform(0.6, 1.2, n)
        self._amp = np.stack([amp_d, amp_d * rng.uniform(0.1, 0.4, n), rng.uniform(0.2, 0.5, n)])
        self._phase = rng.uniform(0.0, 2 * np.pi, (3, n))
        self._phi_latent = np.exp(-1.0 / rng.uniform(60.0, 240.0, n)).astype(np.float32)
        self._phi_idio = np.exp(-1.0 / rng.uniform(10.0, 60.0, (n, nf))).astype(np.float32)
        self._latent = (_LATENT_STD * rng.standard_normal(n)).astype(np.float32)
        self._idio = (_IDIO_STD * rng.standard_normal((n, nf))).astype(np.float32)

    def next_block(self) -> _Block:
        spec, rng = self._spec, self._rng
        n, nf, c = spec.n_streams, len(spec.features), _BLOCK
        steps = np.arange(self._step, self._step + c, dtype=np.float64)
        times = spec.start_time + spec.period_s * steps
        self._step += c

        # Phases from time modulo the period: keeps full float64 precision at epoch ~1.7e9 s.
        day = (2 * np.pi / _DAY_S) * np.mod(times, _DAY_S)
        week = (2 * np.pi / _WEEK_S) * np.mod(times, _WEEK_S)
        season = (
            self._amp[0] * np.sin(day[:, None] + self._phase[0])
            + self._amp[1] * np.sin(2 * day[:, None] + self._phase[1])
            + self._amp[2] * np.sin(week[:, None] + self._phase[2])
        ).astype(np.float32)

        latent = _ar1(self._latent, self._phi_latent, _LATENT_STD, rng.standard_normal((c, n)))
        idio = _ar1(self._idio, self._phi_idio, _IDIO_STD, rng.standard_normal((c, n, nf)))
        self._latent, self._idio = latent[-1].copy(), idio[-1].copy()
        noise = rng.standard_normal((c, n, nf), dtype=np.float32)

        driver = season + latent
        z = idio
        z += self.load * driver[:, :, None]
        z += np.float32(spec.noise) * noise
        values = z
        values *= self.scale
        values += self.level
        return _Block(times, season, driver, values)


def _ar1(
    state: npt.NDArray[np.float32],
    phi: npt.NDArray[np.float32],
    std: float,
    innov: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """Continue ``x[t] = phi x[t-1] + std sqrt(1 - phi^2) e[t]`` from ``state`` over axis 0
    of ``innov``; returns the (C, ...) float32 path, computed in place in the innovations."""
    x = innov.astype(np.float32)
    x *= (std * np.sqrt(1.0 - phi.astype(np.float64) ** 2)).astype(np.float32)
    x[0] += phi * state
    for t in range(1, x.shape[0]):
        x[t] += phi * x[t - 1]
    return x


def _draw_anomaly(
    rng: np.random.Generator, spec: FleetSpec
) -> tuple[str, int, npt.NDArray[np.intp]]:
    """Kind, length in steps and affected channel indices of one anomaly."""
    kinds = spec.active_kinds
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "spike":
        length = int(rng.integers(1, _SPIKE_MAX_LEN + 1))
    else:
        length = int(rng.integers(spec.min_len, spec.max_len + 1))
    nf = len(spec.features)
    if kind == "correlation_break":
        fidx = np.array([rng.integers(nf)], dtype=np.intp)
    else:
        fidx = np.sort(rng.choice(nf, int(rng.integers(1, nf + 1)), replace=False))
    return kind, length, fidx


def _anomalous(
    rng: np.random.Generator,
    kind: str,
    seg: npt.NDArray[np.float64],
    prev: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    load: npt.NDArray[np.float64],
    season: npt.NDArray[np.float64],
    driver: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Anomalous version of one window.

    ``seg``: (L, k) clean values of the k affected channels; ``prev``: (k,) values of the step
    before the window; ``scale``, ``load``: (k,); ``season``, ``driver``: (L + 1,) starting
    at the step before the window. Magnitudes are documented in the module docstring.
    """
    length, k = seg.shape
    step = np.arange(1, length + 1, dtype=np.float64)[:, None]
    if kind == "stuck":
        return np.broadcast_to(prev, seg.shape).copy()
    if kind == "variance_change":
        std = rng.uniform(0.4, 0.8, k)
        return seg + scale * std * rng.standard_normal(seg.shape)
    if kind == "frequency_change":
        period = rng.uniform(8.0, 30.0)
        amp = rng.uniform(1.0, 2.0)
        new_season = season[0] + amp * np.sin(2 * np.pi * step / period)
        return seg + scale * load * (new_season - season[1:, None])
    if kind == "correlation_break":
        std = rng.uniform(1.0, 1.5)
        innov = std * math.sqrt(1 - 0.9**2) * rng.standard_normal(length)
        wander = np.empty(length)
        acc = 0.0
        for t in range(length):
            acc = 0.9 * acc + innov[t]
            wander[t] = acc
        frozen = -load * (driver[1:, None] - driver[0])
        return seg + scale * (frozen + wander[:, None])
    sign = np.where(rng.random(k) < 0.5, -1.0, 1.0)
    if kind == "spike":
        return seg + scale * sign * rng.uniform(3.0, 6.0, k)
    if kind == "level_shift":
        return seg + scale * sign * rng.uniform(1.5, 3.0, k)
    if kind == "drift":
        return seg + scale * sign * rng.uniform(2.0, 4.0, k) * (step / length)
    raise AssertionError(f"unhandled anomaly kind {kind!r}")


def _inject(
    rng: np.random.Generator,
    kind: str,
    sig: _CleanSignal,
    stream: int,
    fidx: npt.NDArray[np.intp],
    values: npt.NDArray[np.float32],
    season: npt.NDArray[np.float32],
    driver: npt.NDArray[np.float32],
) -> None:
    """Overwrite one window in place. ``values``: (L + 1, F) rows of ``stream`` starting at the
    step before the window; ``season``, ``driver``: (L + 1,) likewise."""
    win = values[1:]
    new = _anomalous(
        rng,
        kind,
        win[:, fidx].astype(np.float64),
        values[0, fidx].astype(np.float64),
        sig.scale[stream, fidx].astype(np.float64),
        sig.load[stream, fidx].astype(np.float64),
        season.astype(np.float64),
        driver.astype(np.float64),
    )
    win[:, fidx] = new


def _place(rng: np.random.Generator, lengths: list[int], n_steps: int) -> list[int]:
    """Random non-overlapping starts in ``[1, n_steps)``, ``_MIN_GAP`` apart, in the order of
    ``lengths``; drops trailing windows that do not fit."""
    while lengths and sum(lengths) + _MIN_GAP * (len(lengths) - 1) > n_steps - 1:
        lengths = lengths[:-1]
    if not lengths:
        return []
    free = n_steps - 1 - sum(lengths) - _MIN_GAP * (len(lengths) - 1)
    offsets = np.sort(rng.integers(0, free + 1, len(lengths)))
    before = np.cumsum([0] + [n + _MIN_GAP for n in lengths[:-1]])
    return [int(s) for s in 1 + offsets + before]


def generate_fleet(spec: FleetSpec) -> Fleet:
    """Generate ``spec.n_streams`` streams of ``spec.n_steps`` steps with labelled anomalies.

    Each stream gets a Poisson(``anomaly_rate``) number of windows (fewer if they do not
    fit). Outside the windows the values equal those of the same spec with
    ``anomaly_rate=0``, bit for bit.
    """
    n, n_steps, nf = spec.n_streams, spec.n_steps, len(spec.features)
    base_ss, anom_ss, _ = _seed_sequences(spec.seed)
    sig = _CleanSignal(spec, np.random.default_rng(base_ss))

    times = np.empty(n_steps, dtype=np.float64)
    values = np.empty((n, n_steps, nf), dtype=np.float32)
    season = np.empty((n_steps, n), dtype=np.float32)
    driver = np.empty((n_steps, n), dtype=np.float32)
    for lo in range(0, n_steps, _BLOCK):
        block = sig.next_block()
        hi = min(lo + _BLOCK, n_steps)
        times[lo:hi] = block.times[: hi - lo]
        values[:, lo:hi] = block.values[: hi - lo].transpose(1, 0, 2)
        season[lo:hi] = block.season[: hi - lo]
        driver[lo:hi] = block.driver[: hi - lo]

    keys = spec.keys
    labels = np.zeros((n, n_steps), dtype=bool)
    anomalies: list[Anomaly] = []
    if spec.anomaly_rate > 0:
        rng = np.random.default_rng(anom_ss)
        counts = rng.poisson(spec.anomaly_rate, n)
        for s in np.flatnonzero(counts).tolist():
            drawn = [_draw_anomaly(rng, spec) for _ in range(int(counts[s]))]
            starts = _place(rng, [length for _, length, _ in drawn], n_steps)
            for (kind, length, fidx), a in zip(drawn, starts, strict=False):
                b = a + length
                rows = slice(a - 1, b)
                _inject(rng, kind, sig, s, fidx, values[s, rows], season[rows, s], driver[rows, s])
                labels[s, a:b] = True
                names = tuple(spec.features[i] for i in fidx.tolist())
                anomalies.append(
                    Anomaly(keys[s], kind, float(times[a]), float(times[b - 1]), names)
                )
        anomalies.sort(key=lambda x: (x.start, x.key))
    return Fleet(keys, times, values, labels, anomalies, spec.features, seed=spec.seed)


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
    probability ``anomaly_rate / spec.n_steps`` per step, so the long-run rate matches
    ``generate_fleet``. ``on_anomaly`` is called with each anomaly before its first step is
    yielded (its ``end`` is already known). Deterministic given ``spec.seed``.
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
    # up to g + lookahead and reads row g - 1, so both must be buffered.
    g0 = 0
    times = np.empty(0, dtype=np.float64)
    values = np.empty((0, n, nf), dtype=np.float32)
    season = np.empty((0, n), dtype=np.float32)
    driver = np.empty((0, n), dtype=np.float32)
    labels = np.empty((0, n), dtype=bool)
    free_from = np.ones(n, dtype=np.int64)  # first step at which a stream may start one

    g = 0
    while n_steps is None or g < n_steps:
        while g0 + len(times) <= g + lookahead:
            b = sig.next_block()
            times = np.concatenate([times, b.times])
            values = np.concatenate([values, b.values])
            season = np.concatenate([season, b.season])
            driver = np.concatenate([driver, b.driver])
            labels = np.concatenate([labels, np.zeros((_BLOCK, n), dtype=bool)])
        r = g - g0
        if p_start > 0:
            starting = (rng.random(n) < p_start) & (free_from <= g)
            for s in np.flatnonzero(starting).tolist():
                kind, length, fidx = _draw_anomaly(rng, spec)
                rows = slice(r - 1, r + length)
                _inject(rng, kind, sig, s, fidx, values[rows, s], season[rows, s], driver[rows, s])
                labels[r : r + length, s] = True
                free_from[s] = g + length + _MIN_GAP
                if on_anomaly is not None:
                    names = tuple(spec.features[i] for i in fidx.tolist())
                    end = float(times[r + length - 1])
                    on_anomaly(Anomaly(keys[s], kind, float(times[r]), end, names))
        yield key_arr.copy(), np.full(n, times[r]), values[r].copy(), labels[r].copy()
        g += 1
        if r > _BLOCK:  # drop consumed rows, keeping step g - 1
            cut = r
            g0 += cut
            times, values, season = times[cut:], values[cut:], season[cut:]
            driver, labels = driver[cut:], labels[cut:]
