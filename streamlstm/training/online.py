"""Cold starts: a model that learns from the streams it is scoring.

Two ways in:

- :func:`learn_first_part` trains on the first part of a series (or fleet)
  with settings adapted to little data, and calibrates on the last part of
  that same share. ``evaluate --learn-first 0.15`` uses it to judge a single
  series that has no separate history: learn from its first 15%, judge the
  rest.
- :class:`OnlineLearner` wraps a :class:`~streamlstm.detector.Detector`:
  events are scored as they come (no score until the first model exists);
  once ``learn_first`` events of a stream are buffered, a model is trained
  on the buffers and the buffered events are replayed through it to warm
  the streams' state up; then, every ``refit_every`` events (0 = never), the
  model is fine-tuned on each stream's recent events (``buffer`` per
  stream) for ``fine_tune_epochs`` with the same kernels and swapped into
  the detector without losing any stream's state. Events that were in alert
  are kept out of learning (their features are marked missing in the
  buffer), so an incident does not teach the model that it is normal.

Small-data adaptation (:func:`adapt_config`): the window shrinks so a
stream gives at least a few windows, and the minibatch shrinks so an epoch
has at least :data:`MIN_STEPS_PER_EPOCH` optimizer steps; otherwise a few
hundred events would give one Adam step per epoch and an untrained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from streamlstm.detector import BatchResult, Detector, DetectorConfig
from streamlstm.errors import InputError
from streamlstm.model import Model
from streamlstm.training.trainer import TrainConfig, train_model

MIN_STEPS_PER_EPOCH = 8
MIN_WINDOW = 8
MIN_EVENTS = 16  # fewer events than this per fleet cannot train anything


def adapt_config(config: TrainConfig, n_events: int, n_streams: int = 1) -> TrainConfig:
    """Shrink window and batch to the data (see the module doc); never grow them."""
    per_stream = max(1, n_events // max(1, n_streams))
    train_part = int(per_stream * (1.0 - config.val_fraction))
    window = max(MIN_WINDOW, min(config.window, train_part // 4))
    n_windows = max(1, n_streams * (train_part // window))
    batch = max(1, min(config.batch, n_windows // MIN_STEPS_PER_EPOCH))
    burn_in = min(config.burn_in, window - 1)
    # No carried states: these models score the streams they learnt from, from their
    # start (a replay) or already running (a refit), never a continuation.
    return replace(config, window=window, batch=batch, burn_in=burn_in, carry_streams=0)


def learn_first_part(
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    config: TrainConfig | None = None,
    init: Model | None = None,
    detector_config: DetectorConfig | None = None,
) -> Model:
    """Train (or fine-tune ``init``) and calibrate on these events, which are the
    learning part of one or more streams; returns the calibrated model."""
    cfg = config or TrainConfig(progress=False)
    n = len(keys)
    if n < MIN_EVENTS:
        raise InputError(f"only {n} events to learn from; need at least {MIN_EVENTS}")
    n_streams = len(set(np.asarray(keys, dtype=object).tolist()))
    cfg = adapt_config(cfg, n, n_streams)
    model, _ = train_model(keys, times, x, features, cfg, init=init,
                           detector_config=detector_config)  # fmt: skip
    return model


class _Buffer:
    """The last ``size`` events of one stream (times, raw features)."""

    def __init__(self, size: int, n_feat: int) -> None:
        self.size = size
        self.t = np.empty(0, np.float64)
        self.x = np.empty((0, n_feat), np.float64)
        self.total = 0

    def add(self, t: np.ndarray, x: np.ndarray) -> None:
        self.t = np.concatenate([self.t, t])[-self.size :]
        self.x = np.concatenate([self.x, x])[-self.size :]
        self.total += t.shape[0]


class OnlineLearner:
    """A detector that trains its own model from the streams (see the module doc).

    >>> from streamlstm.examples.synth import FleetSpec, generate_fleet
    >>> fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=300, anomaly_rate=0, seed=2))
    >>> keys, times, x, _ = fleet.events()
    >>> cfg = TrainConfig(hidden=4, epochs=1, progress=False)
    >>> ol = OnlineLearner(fleet.features, cfg, learn_first=100)
    >>> res = ol.process_many(list(keys), times, x)
    >>> ol.model is not None, bool(np.isnan(res.score[:150]).all()), ol.fits
    (True, True, 1)
    """

    def __init__(
        self,
        features: Sequence[str],
        config: TrainConfig | None = None,
        detector_config: DetectorConfig | None = None,
        learn_first: int = 500,
        refit_every: int = 0,
        buffer: int = 5000,
        fine_tune_epochs: int = 2,
        init: Model | None = None,
    ) -> None:
        if learn_first < MIN_EVENTS:
            raise ValueError(f"learn_first is {learn_first}, expected >= {MIN_EVENTS}")
        if refit_every < 0 or buffer < learn_first or fine_tune_epochs < 1:
            raise ValueError("need refit_every >= 0, buffer >= learn_first, fine_tune_epochs >= 1")
        self.features = tuple(features)
        self.config = config or TrainConfig(progress=False)
        self.detector_config = detector_config or DetectorConfig()
        self.learn_first = learn_first
        self.refit_every = refit_every
        self.buffer = buffer
        self.fine_tune_epochs = fine_tune_epochs
        self.init = init
        self.model: Model | None = None
        self.detector: Detector | None = None
        self.fits = 0
        self._since_fit = 0
        self._buffers: dict[str, _Buffer] = {}

    # -- the one call ---------------------------------------------------------------
    def process_many(self, keys: Sequence[str], times: Any, x: Any) -> BatchResult:
        """Score (once a model exists), then learn; same results as the Detector's.

        A batch is cut where a learning step is due (first fit, refit), so the
        events after the cut are already scored by the new model.
        """
        keys = list(keys)
        times_a = np.asarray(times, np.float64)
        xa = np.asarray(x, np.float64)
        n = len(keys)
        if xa.shape != (n, len(self.features)) or times_a.shape != (n,):
            raise InputError(
                f"expected {n} times and ({n}, {len(self.features)}) features, got "
                f"{times_a.shape} and {xa.shape}"
            )
        parts: list[tuple[int, BatchResult]] = []
        start = 0
        while start < n or not parts:
            cut = self._next_cut(keys, start, n)
            end = start + cut
            parts.append((start, self._process_part(keys[start:end], times_a[start:end],
                                                    xa[start:end])))  # fmt: skip
            start = end
        return parts[0][1] if len(parts) == 1 else _concat(parts)

    def _next_cut(self, keys: list[str], start: int, n: int) -> int:
        """Events to take from ``start`` up to and including the next learning step."""
        rest = n - start
        if rest <= 0:
            return 0
        if self.detector is None:
            k = np.asarray(keys[start:], dtype=object)
            best = rest
            for key in dict.fromkeys(keys[start:]):
                have = self._buffers[key].total if key in self._buffers else 0
                idx = np.flatnonzero(k == key)
                need = max(1, self.learn_first - have)
                if idx.shape[0] >= need:
                    best = min(best, int(idx[need - 1]) + 1)
            return best
        if self.refit_every:
            return min(rest, max(1, self.refit_every - self._since_fit))
        return rest

    def _process_part(self, keys: list[str], t: np.ndarray, x: np.ndarray) -> BatchResult:
        n = len(keys)
        if self.detector is None:
            res = _empty_result(n, len(self.features))
            self._remember(keys, t, x, res.alert)
            if max((b.total for b in self._buffers.values()), default=0) >= self.learn_first:
                self._first_fit()
            return res
        res = self.detector.process_many(keys, t, x)
        self._remember(keys, t, x, res.alert)
        self._since_fit += n
        if self.refit_every and self._since_fit >= self.refit_every:
            self._refit()
        return res

    # -- learning -------------------------------------------------------------------
    def _remember(self, keys: list[str], t: np.ndarray, x: np.ndarray, alert: np.ndarray) -> None:
        x = x.copy()
        x[np.asarray(alert, bool)] = np.nan  # keep incidents out of learning
        k = np.asarray(keys, dtype=object)
        for key in dict.fromkeys(keys):
            idx = np.flatnonzero(k == key)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = _Buffer(self.buffer, len(self.features))
            buf.add(t[idx], x[idx])

    def _training_set(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        keys: list[str] = []
        ts, xs = [], []
        for key, b in self._buffers.items():
            if b.t.shape[0] >= 2:
                keys += [key] * b.t.shape[0]
                ts.append(b.t)
                xs.append(b.x)
        return keys, np.concatenate(ts), np.concatenate(xs)

    def _first_fit(self) -> None:
        keys, t, x = self._training_set()
        self.model = learn_first_part(keys, t, x, self.features, self.config, self.init,
                                      self.detector_config)  # fmt: skip
        self.fits = 1
        self._since_fit = 0
        self.detector = Detector(self.model, self.detector_config)
        # Warm every buffered stream up (state, running scale); the scores were
        # already returned as "not scored".
        order = np.lexsort((t,))
        self.detector.process_many([keys[i] for i in order], t[order], x[order])

    def _refit(self) -> None:
        assert self.model is not None and self.detector is not None
        keys, t, x = self._training_set()
        cfg = replace(self.config, epochs=self.fine_tune_epochs, seed=self.config.seed + self.fits)
        cfg = adapt_config(cfg, len(keys), len(set(keys)))
        # The buffers hold recent events: per-stream normalisation continues from
        # the statistics the detector learnt from each stream's first events.
        table = self.detector.table
        stats = (
            {k: table.arrays["nstat"][table.slot(k)].copy() for k in set(keys) if k in table}
            if "nstat" in table.arrays
            else None
        )
        model, _ = train_model(keys, t, x, self.features, cfg, init=self.model,
                               detector_config=self.detector_config,
                               stream_stats=stats)  # fmt: skip
        self.detector.reload_model(model)
        self.model = model
        self.fits += 1
        self._since_fit = 0


def _empty_result(n: int, n_feat: int) -> BatchResult:
    return BatchResult(
        outcome=np.zeros(n, np.int8),
        score=np.full(n, np.nan, np.float32),
        hold=np.full(n, np.nan, np.float32),
        alert=np.zeros(n, bool),
        transition=np.zeros(n, np.int8),
        forecast=np.full((n, n_feat), np.nan, np.float32),
        slots=np.full(n, -1, np.int64),
    )


def _concat(parts: list[tuple[int, BatchResult]]) -> BatchResult:
    rs = [r for _, r in parts]
    out = BatchResult(
        outcome=np.concatenate([r.outcome for r in rs]),
        score=np.concatenate([r.score for r in rs]),
        hold=np.concatenate([r.hold for r in rs]),
        alert=np.concatenate([r.alert for r in rs]),
        transition=np.concatenate([r.transition for r in rs]),
        forecast=np.concatenate([r.forecast for r in rs]),
        slots=np.concatenate([r.slots for r in rs]),
    )
    out.transitions = [
        replace(tr, index=tr.index + off) for off, r in parts for tr in r.transitions
    ]
    return out
