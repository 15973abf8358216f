"""The engine: a batch of (keys, event times, features) in, scores and alerts out.

One API for the daemon, offline ``streamlstm score``, evaluation and tests.
The vocabulary follows river's, with one difference the streaming setting
forces: scoring an event and learning from it are one step, because the next
event's forecast needs this event in the stream's state. So the main call is
:meth:`Detector.process_many` (score, then advance) and
:meth:`Detector.process_one` its one-event form; both return the same
numbers, bit for bit, whatever the batching.

>>> from streamlstm.model import Model
>>> det = Detector(Model.random(["temp"], hidden=8), DetectorConfig(warmup=2))
>>> res = det.process_many(["a", "b", "a"], [0.0, 0.0, 60.0], [[1.0], [2.0], [1.1]])
>>> res.outcome.tolist(), bool(np.isnan(res.score[0])), bool(np.isfinite(res.score[2]))
([0, 0, 0], True, True)

Length: the one engine API (config, state columns, process_many, snapshots, alert
replay) every caller uses; the kernels it drives are in streamlstm.kernels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np

from streamlstm.detector.carry import Carried, state_settings
from streamlstm.errors import InputError, ModelError
from streamlstm.kernels import alerts as KA
from streamlstm.kernels import detect as K
from streamlstm.kernels import norm as KN
from streamlstm.kernels.regime import VIEW_NAMES
from streamlstm.model import Model
from streamlstm.state import Column, StreamTable

log = logging.getLogger(__name__)

# Default open thresholds when neither the config nor the model sets one. With
# stream_scale the score is u / (1 + u), u = error / the stream's recent normal
# maximum: 0.7 opens at an error 2.3x the largest of the recent past (and the
# derived close threshold, 0.5, closes once errors are back under that maximum).
# Without it the score is a chi-square tail probability of calibrated residuals.
# Features named as having driven an alert: the top one, plus others with at least this
# share of the error, at most TOP_FEATURES (they become a bounded Prometheus label).
TOP_FEATURES = 3
TOP_SHARE = 0.2
DEFAULT_OPEN = 0.7
DEFAULT_OPEN_ABSOLUTE = 0.999
# The regime scorer (streamlstm.kernels.regime): a score of 0.5 is a distance of 1
# from the stream's learnt normal, a hold of 1/3 is "half way back".
DEFAULT_OPEN_REGIME = 0.5
DEFAULT_CLOSE_REGIME = 1.0 / 3.0
SCORERS = K.SCORER_NAMES
DEFAULT_NORM_WINDOW = KN.DEFAULT_WINDOW
STREAM_NORM_CHOICES = ("model", *KN.MODES)


@dataclass(frozen=True)
class DetectorConfig:
    """Scoring and alert settings (the ``scoring`` / ``alerts`` / ``state`` YAML sections).

    scorer: "regime" (default): how far the stream is from its own learnt normal
        through spike, level, energy and flat-line views, with an alert held
        while the features that broke stay away (:mod:`streamlstm.kernels.regime`);
        "forecast": the one-step forecast error against the stream's recent
        maximum (the scorer of streamlstm <= 0.3).
    open_threshold: score at or above which an event counts as anomalous;
        None takes the model's calibrated threshold, else 0.5 (regime), 0.7
        (forecast) or 0.999 (forecast without ``stream_scale``).
    close_threshold: an open alert closes after ``close_run`` consecutive
        hold scores below this (hysteresis; the forecast scorer's hold is its
        score); None = 1/3 (regime), ``max(0.5, 1 - 10 * (1 - open))`` (forecast).
    min_run: consecutive anomalous events needed to open an alert.
    close_run: consecutive normal events needed to close it.
    cooldown_s: event-time seconds after a close during which no alert opens.
    warmup: events a new (or reset) stream sees before it may alert.
    stream_scale: score the (smoothed) error against the stream's own recent
        maximum of normal errors (see kernels/detect.py and SCORING.md);
        False: score calibrated residuals as a chi-square tail probability.
    scale_window: time constant, in events, of the decay of that recent maximum.
    learn_ratio: an error at most this many times the recent maximum still
        teaches it (after warm-up); a larger one is an incident and does not.
    smooth: EWMA span of the normalised error before it becomes a score
        (1 = none); helps on noisy multichannel sensors.
    max_abs: a normalised feature beyond this many standard deviations is
        rejected as garbage (``out_of_range``) instead of scored.
    decay_tau_s: if > 0, state is multiplied by exp(-gap / tau) before an
        event that follows a gap (0 = off).
    reset_gap_s: if > 0, a gap longer than this resets the stream's state
        and warm-up (0 = off).
    min_scale: floor of the running error scale, so a perfectly predictable
        stream does not turn rounding noise into alerts.
    max_streams: live-stream cap; least recently seen streams are evicted. A
        batch with more distinct streams than the cap is processed in chunks of
        ``max_streams`` events, in order, so a stream of an earlier chunk may be
        evicted for a new stream of a later one (bounded memory wins: the
        evicted stream starts cold when it comes back, counted as an eviction).
    idle_ttl_s: streams without events for this long (event time) are
        evicted by :meth:`Detector.expire` (0 = never).
    stream_norm: per-stream input normalisation (:mod:`streamlstm.kernels.norm`,
        SCORING.md "Normalise per stream"): each stream's model-normalised
        features are re-standardised with the mean and standard deviation of
        the stream's own values. "warmup": learnt from its first
        ``norm_window`` values per feature, then frozen; "ewm": then kept
        learning with an EWMA of span ``norm_window`` events that clips
        outliers to 4 sigma; "off": the model's global statistics only;
        "model" (default): what the model was trained with ("off" for models
        trained without it). A model trained with it expects it.
    norm_window: events of that warm-up (and the EWMA's time constant);
        0 = the model's, else 256.
    """

    scorer: str = "regime"
    open_threshold: float | None = None
    close_threshold: float | None = None
    min_run: int = 1
    close_run: int = 3
    cooldown_s: float = 0.0
    warmup: int = 30
    stream_scale: bool = True
    scale_window: int = 1000
    learn_ratio: float = 2.0
    smooth: int = 3
    max_abs: float = 1e5
    decay_tau_s: float = 0.0
    reset_gap_s: float = 0.0
    min_scale: float = 1e-4
    max_streams: int = 1_000_000
    idle_ttl_s: float = 0.0
    stream_norm: str = "model"
    norm_window: int = 0

    def __post_init__(self) -> None:
        for name, ok, expect in (
            ("scorer", self.scorer in SCORERS, f"one of {', '.join(SCORERS)}"),
            (
                "open_threshold",
                self.open_threshold is None or 0 < self.open_threshold < 1,
                "in (0, 1)",
            ),
            (
                "close_threshold",
                self.close_threshold is None or 0 < self.close_threshold < 1,
                "in (0, 1)",
            ),
            ("min_run", self.min_run >= 1, ">= 1"),
            ("close_run", self.close_run >= 1, ">= 1"),
            ("cooldown_s", self.cooldown_s >= 0, ">= 0"),
            ("warmup", self.warmup >= 0, ">= 0"),
            ("scale_window", self.scale_window >= 1, ">= 1"),
            ("learn_ratio", self.learn_ratio > 0, "> 0"),
            ("smooth", self.smooth >= 1, ">= 1"),
            ("max_abs", self.max_abs > 0, "> 0"),
            ("decay_tau_s", self.decay_tau_s >= 0, ">= 0"),
            ("reset_gap_s", self.reset_gap_s >= 0, ">= 0"),
            ("min_scale", self.min_scale > 0, "> 0"),
            ("max_streams", self.max_streams >= 1, ">= 1"),
            ("idle_ttl_s", self.idle_ttl_s >= 0, ">= 0"),
            (
                "stream_norm",
                self.stream_norm in STREAM_NORM_CHOICES,
                f"one of {', '.join(STREAM_NORM_CHOICES)}",
            ),
            ("norm_window", self.norm_window >= 0, ">= 0 (0 = the model's)"),
        ):
            if not ok:
                raise ValueError(f"{name} is {getattr(self, name)!r}, expected {expect}")
        if (
            self.open_threshold is not None
            and self.close_threshold is not None
            and self.close_threshold > self.open_threshold
        ):
            raise ValueError(
                f"close_threshold {self.close_threshold} is above open_threshold "
                f"{self.open_threshold}; hysteresis needs close <= open"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stream_norm_for(self, model: Model) -> tuple[str, int]:
        """(mode, window) of per-stream normalisation this config gives ``model``."""
        mode = model.stream_norm if self.stream_norm == "model" else self.stream_norm
        window = self.norm_window or model.norm_window or DEFAULT_NORM_WINDOW
        return mode, (window if mode != "off" else 0)

    def close_for(self, open_thr: float) -> float:
        """The close threshold that goes with ``open_thr``: the one home of the rule.

        ``close_threshold`` when set, else for the regime scorer 1/3 (its hold
        at half the distance that opens), for the forecast scorer
        ``max(0.5, 1 - 10 (1 - open))`` (an open threshold of 0.99 closes at
        0.9, one of 0.7 or below at 0.5); never above ``open_thr``, so there
        is always hysteresis.
        """
        close = self.close_threshold
        if close is None and self.scorer == "regime":
            close = DEFAULT_CLOSE_REGIME
        elif close is None:
            close = max(0.5, 1.0 - 10.0 * (1.0 - open_thr))
        return float(min(close, open_thr))

    def default_open(self) -> float:
        """The open threshold when neither the config nor the model sets one."""
        if self.scorer == "regime":
            return DEFAULT_OPEN_REGIME
        return DEFAULT_OPEN if self.stream_scale else DEFAULT_OPEN_ABSOLUTE

    def thresholds_for(self, model: Model) -> tuple[float, float]:
        """(open, close) thresholds this config gives ``model``: the config's open
        threshold, else the model's calibrated one, else the default."""
        default_open = self.default_open()
        # A calibrated threshold is a threshold of the scorer it was calibrated for
        # (files from before the regime scorer calibrated the forecast scorer).
        own = model.calibration.get("scorer", "forecast") == self.scorer
        open_thr = float(self.open_threshold or (model.threshold if own else None) or default_open)
        return open_thr, self.close_for(open_thr)

    def replay_alerts(
        self,
        slots: np.ndarray,
        times: np.ndarray,
        score: np.ndarray,
        outcome: np.ndarray,
        open_thr: float,
        n_slots: int | None = None,
        hold: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(alert int8, transition int8) per event: the alert machine alone, re-run at
        ``open_thr`` over scores one detector pass recorded.

        Scores and everything the scorer learns do not depend on the thresholds,
        so this equals a full re-run of the detector at ``open_thr``; threshold
        sweeps and calibration use it. slots : (n,) int64 one per stream, times
        (n,) float64, score (n,) float32 (NaN: not scored), outcome (n,) int8 the
        detector's outcome codes, hold (n,) float32 the hold scores (None: the
        score, right for the forecast scorer); events of one slot in the order
        the detector saw them.
        """
        slots = np.ascontiguousarray(slots, np.int64)
        n = slots.shape[0]
        accepted = ~np.isin(outcome, np.array(sorted(REJECTED), np.int8))
        out_alert = np.empty(n, np.int8)
        out_trans = np.empty(n, np.int8)
        score = np.ascontiguousarray(score, np.float32)
        hold = score if hold is None else np.ascontiguousarray(hold, np.float32)
        n_slots = int(n_slots if n_slots is not None else slots.max(initial=-1) + 1)
        KA._alert_replay(
            slots, np.ascontiguousarray(times, np.float64), score, hold, accepted, n_slots,
            float(open_thr), self.close_for(open_thr), int(self.min_run), int(self.close_run),
            float(self.cooldown_s), int(self.warmup), float(self.reset_gap_s), out_alert, out_trans,
        )  # fmt: skip
        return out_alert, out_trans


@dataclass(frozen=True)
class Transition:
    """An alert opening or closing, with what drove it."""

    alert_id: str
    kind: str  # "opened" | "closed"
    key: str
    group: int
    index: int  # position in the batch
    time: float
    ref: int  # caller's id of the event (e.g. Kafka offset)
    score: float
    threshold: float
    values: dict[str, float]
    forecast: dict[str, float]
    contributions: list[tuple[str, float]]  # (feature, share of the distance), largest first
    # the view behind each feature with a share (regime.VIEW_NAMES: "spike", "level", ...)
    views: dict[str, str] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Per-event results of one :meth:`Detector.process_many` call.

    outcome (n,) int8 codes (see ``OUTCOME_NAMES``), score (n,) float32
    in [0, 1] (NaN when not scored: rejected, or first event of a stream),
    hold (n,) float32 the score the alert machine closes on (the regime
    scorer: how far the features that broke still are from normal), alert
    (n,) bool stream in alert after the event, transition (n,) int8,
    forecast (n, F) float32 forecast each event was compared with, in raw
    units (the model's and the per-stream normalisation undone; NaN before a
    stream's first forecast), slots (n,) int64 (after a batch processed in
    chunks, see :meth:`Detector.process_many`, the slot an early event used may
    already hold another stream).
    """

    outcome: np.ndarray
    score: np.ndarray
    alert: np.ndarray
    transition: np.ndarray
    forecast: np.ndarray
    slots: np.ndarray
    hold: np.ndarray
    transitions: list[Transition] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.outcome.astype(np.int64), minlength=len(OUTCOME_NAMES))
        return {name: int(c[i]) for i, name in enumerate(OUTCOME_NAMES)}


_ARRAY_FIELDS = ("outcome", "score", "alert", "transition", "forecast", "slots", "hold")
OUTCOME_NAMES = K.OUTCOME_NAMES
REJECTED = frozenset({K.TOO_OLD, K.MISSING, K.NON_FINITE, K.OUT_OF_RANGE})


class OpenAlert(NamedTuple):
    """A stream whose alert is open (see :meth:`Detector.open_alerts`)."""

    key: str
    group: int
    peak: float  # highest score of the open alert
    features: str  # top features, "a,b"
    alert_id: str  # the id of its alert records
    opened_ref: int  # ref (the daemon: Kafka offset) of the event that opened it
    last_time: float  # event time of the stream's last accepted event


def alert_id(key: str, group: int, ref: int) -> str:
    """Deterministic id of the alert opened by event ``ref`` of ``key`` in ``group``."""
    return hashlib.sha1(f"{key}\x1f{group}\x1f{ref}".encode()).hexdigest()[:20]


class Detector:
    """Per-stream LSTM/GRU forecaster, scorer and alert state machine."""

    def __init__(
        self,
        model: Model,
        config: DetectorConfig | None = None,
        table: StreamTable | None = None,
    ) -> None:
        self.config = config or DetectorConfig()
        self.stream_norm, self.norm_window = self.config.stream_norm_for(model)
        if model.delta and self.stream_norm != "off":
            raise ModelError(
                f"scoring.stream_norm: {self.stream_norm!r} with model {model.describe()}, "
                "which reads changes: a model of changes takes no per-stream normalisation"
            )
        if self.stream_norm != model.stream_norm:
            log.warning(
                "model %s was trained with stream_norm %r and runs with %r: it sees inputs "
                "in other units than it learnt from (leave scoring.stream_norm at 'model' "
                "unless that is the point)",
                model.describe(), model.stream_norm, self.stream_norm,
            )  # fmt: skip
        self.table = table or StreamTable(
            self.columns_for(model, self.stream_norm), max_streams=self.config.max_streams
        )
        self.outcome_totals = np.zeros(len(OUTCOME_NAMES), np.int64)
        self.transition_totals = {"opened": 0, "closed": 0}
        self.continued = 0  # streams started from the model's carried state, over every model
        self._set_model(model)

    @staticmethod
    def columns_for(model: Model, stream_norm: str = "off") -> dict[str, Column]:
        """State columns; ``nstat`` (per-stream normalisation statistics) only when
        it is on, so checkpoints of detectors without it keep their layout."""
        lh = (model.layers, model.hidden)
        cols = {
            "h": Column(lh, "float32"),
            "c": Column(lh if model.cell == "lstm" else (model.layers, 0), "float32"),
            # a model of changes keeps each stream's last value beside its forecast
            "fc": Column(((2 if model.delta else 1) * model.n_features,), "float32"),
            "fstat": Column((K.N_FSTAT,), "float64", grows=True),
            "istat": Column((K.N_ISTAT,), "int64"),
            # rows appended by later versions are zero = not learnt yet (state.table)
            "sstat": Column(
                (K.n_sstat_rows(model.n_features), model.n_features), "float32", grows=True
            ),
        }
        if stream_norm != "off":
            cols["nstat"] = Column((KN.N_NSTAT, model.n_features), "float64")
        return cols

    def _set_model(self, model: Model) -> None:
        self.model = model
        self._weights, self._layout = K.pack_weights(*model.kernel_weights())
        cfg = self.config
        open_thr, close_thr = cfg.thresholds_for(model)
        self.open_threshold = float(open_thr)
        self.close_threshold = float(close_thr)
        n_feat = model.n_features
        p = np.zeros(K.N_PARAMS + K.N_PFEAT * n_feat, np.float64)
        p[K.P_OPEN] = open_thr
        p[K.P_CLOSE] = close_thr
        p[K.P_MIN_RUN] = cfg.min_run
        p[K.P_CLOSE_RUN] = cfg.close_run
        p[K.P_COOLDOWN] = cfg.cooldown_s
        p[K.P_WARMUP] = cfg.warmup
        p[K.P_STREAM_SCALE] = 1.0 if cfg.stream_scale else 0.0
        p[K.P_SCALE_WINDOW] = cfg.scale_window
        p[K.P_SMOOTH_ALPHA] = 2.0 / (cfg.smooth + 1.0)
        p[K.P_MAX_ABS] = cfg.max_abs
        p[K.P_DECAY_TAU] = cfg.decay_tau_s
        p[K.P_RESET_GAP] = cfg.reset_gap_s
        p[K.P_TIME_INPUT] = 1.0 if model.time_input else 0.0
        p[K.P_DT_MEAN] = model.dt_mean
        p[K.P_DT_STD] = model.dt_std
        p[K.P_MIN_SCALE] = cfg.min_scale
        p[K.P_LEARN_RATIO] = cfg.learn_ratio
        p[K.P_STREAM_NORM] = KN.MODES[self.stream_norm]
        p[K.P_NORM_WINDOW] = max(self.norm_window, 1)
        p[K.P_SCORER] = SCORERS.index(cfg.scorer)
        p[K.P_DELTA] = 1.0 if model.delta else 0.0
        for row, values in (
            (K.PF_RESID, model.resid_scale),
            (K.PF_MEAN, model.norm_mean),
            (K.PF_STD, model.norm_std),
            (K.PF_SCORED, model.scored_mask()),
        ):
            start = K.N_PARAMS + row * n_feat
            p[start : start + n_feat] = values
        self._params = p
        self._n_feat = n_feat
        self._out_val_size_1 = K.out_val_size(1, n_feat)
        self._no_nstat = np.zeros((1, KN.N_NSTAT, n_feat), np.float64)
        settings = state_settings(cfg, self.stream_norm, self.norm_window)
        self.carried = Carried.for_detector(model, self.table.columns, settings)

    def reload_model(self, model: Model) -> None:
        """Swap the model, keeping every stream's state; refuse a shape change."""
        if not self.model.same_shape(model):
            raise ModelError(
                f"new model ({model.describe()}) does not fit the state of the running one "
                f"({self.model.describe()}); restart with a fresh state to switch"
            )
        if self.config.stream_norm_for(model) != (self.stream_norm, self.norm_window):
            mode, window = self.config.stream_norm_for(model)
            raise ModelError(
                f"new model expects per-stream normalisation {mode!r} (window {window}), the "
                f"running streams use {self.stream_norm!r} (window {self.norm_window}); "
                "restart with a fresh state to switch, or set scoring.stream_norm"
            )
        self._set_model(model)

    # -- the hot path --------------------------------------------------------------
    def process_many(
        self,
        keys: Sequence[str],
        times: Any,
        x: Any,
        refs: Any = None,
        group: int = 0,
    ) -> BatchResult:
        """Score a micro-batch, advance every stream's state, run the alert machines.

        keys: n stream keys; times: n event times (seconds, or datetime64);
        x: (n, F) raw features in the model's feature order, NaN = missing;
        refs: n int64 ids of the events (e.g. Kafka offsets) that alert ids are
        made from; default (or -1) = the stream's own event count, so a stream
        gets the same ids whatever else is interleaved with it; group: the
        group new streams join (the daemon passes the Kafka partition).

        A batch with more distinct keys than ``max_streams`` cannot hold all its
        streams at once: it is processed as consecutive chunks of ``max_streams``
        events (each fits, so the cap's least-recently-seen eviction can make
        room), with the same results as those chunks passed one by one.
        """
        n = len(keys)
        cap = self.config.max_streams
        if n > cap and len(set(keys)) > cap:
            return self._process_chunked(keys, times, x, refs, group, cap)
        times = _as_seconds(times, n)
        xr = np.ascontiguousarray(x, dtype=np.float64)
        n_feat = self._n_feat
        if xr.shape != (n, n_feat):
            raise InputError(
                f"features have shape {xr.shape}, expected ({n}, {n_feat}) "
                f"for features {', '.join(self.model.features)}"
            )
        ev = np.empty((K.N_EV, n), np.int64)
        if refs is None:
            ev[K.EV_REF] = -1
        else:
            refs_a = np.ascontiguousarray(refs, np.int64)
            if refs_a.shape != (n,):
                raise InputError(f"refs have shape {refs_a.shape}, expected ({n},)")
            ev[K.EV_REF] = refs_a
        ev[K.EV_SLOT] = slots = self.table.slots_for(keys, group)
        if self.carried is not None and self.table.last_new.size:
            self.continued += self.carried.seed(self.table, keys, times, slots)
        out_code = np.empty((K.N_OCODE, n), np.int8)
        out_val = np.empty(n * self._out_val_size_1, np.float32)
        a = self.table.arrays
        # Without per-stream normalisation the kernel never reads nstat.
        on = "nstat" in a
        n_trans = K._detect_batch(
            ev, times, xr, a["h"], a["c"], a["fc"], a["fstat"], a["istat"],
            a["nstat"] if on else self._no_nstat, a["sstat"],
            self._weights, self._layout, self._params, out_code, out_val,
        )  # fmt: skip
        outcome = out_code[K.OC_OUTCOME]
        if n == 1:
            # Scalar stores: bincount and fancy indexing cost ~1 us each per call.
            s = slots[0]
            self.table.last_time[s] = a["fstat"][s, K.F_LAST_T]
            self.outcome_totals[outcome[0]] += 1
        else:
            self.table.last_time[slots] = a["fstat"][slots, K.F_LAST_T]
            self.outcome_totals += np.bincount(outcome, minlength=len(OUTCOME_NAMES))
        # out_val: score, (n, F) blocks, hold, contributions (split_out_val / _extra).
        score, _, _, forecast = K.split_out_val(out_val, n, n_feat)
        hold, contrib, why = K.split_out_extra(out_val, n, n_feat)
        trans = out_code[K.OC_TRANS]
        # out_code's alert row holds 0 / 1: viewed as bool, no copy.
        alert = out_code[K.OC_ALERT].view(np.bool_)
        result = BatchResult(outcome, score, alert, trans, forecast, slots, hold)
        if n_trans:
            result.transitions = [
                self._transition(
                    int(i),
                    keys,
                    times,
                    xr,
                    contrib[i],
                    why[i],
                    int(ev[K.EV_OPEN_REF, i]),
                    result,
                )
                for i in np.flatnonzero(trans)
            ]
        return result

    def _process_chunked(
        self, keys: Sequence[str], times: Any, x: Any, refs: Any, group: int, size: int
    ) -> BatchResult:
        n = len(keys)
        times = _as_seconds(times, n)
        xr = np.ascontiguousarray(x, dtype=np.float64)
        refs_a = None if refs is None else np.ascontiguousarray(refs, np.int64)
        parts = []
        for lo in range(0, n, size):
            hi = min(n, lo + size)
            part = self.process_many(
                keys[lo:hi], times[lo:hi], xr[lo:hi],
                None if refs_a is None else refs_a[lo:hi], group,
            )  # fmt: skip
            part.transitions = [replace(t, index=t.index + lo) for t in part.transitions]
            parts.append(part)
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in _ARRAY_FIELDS}
        return BatchResult(**arrays, transitions=[t for p in parts for t in p.transitions])

    def process_one(
        self, key: str, time: float, x: Any, ref: int = -1, group: int = 0
    ) -> BatchResult:
        return self.process_many(
            (key,),
            np.array((time,)),
            np.asarray(x, np.float64).reshape(1, -1),
            None if ref == -1 else (ref,),
            group,
        )

    def _transition(
        self,
        i: int,
        keys: Sequence[str],
        times: np.ndarray,
        xr: np.ndarray,
        part: np.ndarray,
        why: np.ndarray,
        ref: int,
        res: BatchResult,
    ) -> Transition:
        s = int(res.slots[i])
        kind = "opened" if res.transition[i] == K.OPENED else "closed"
        self.transition_totals[kind] += 1
        group = int(self.table.group[s])
        feats = self.model.features
        # Each feature's part in the score, as the kernel computed it (the regime
        # scorer's distances, the forecast scorer's squared normalised errors).
        p = np.where(np.isfinite(part), part.astype(np.float64), 0.0)
        total = float(p.sum()) or 1.0
        contrib = sorted(
            ((feats[f], float(p[f] / total)) for f in range(len(feats))), key=lambda t: -t[1]
        )
        if kind == "opened":
            # Remember which features drove it (in the state, so it survives restarts):
            # the largest share, and any other above TOP_SHARE, at most TOP_FEATURES.
            mask = 0
            for rank, (name, share) in enumerate(contrib[:TOP_FEATURES]):
                if rank == 0 or share >= TOP_SHARE:
                    mask |= 1 << feats.index(name)
            self.table.arrays["istat"][s, K.I_TOP_MASK] = mask
        return Transition(
            alert_id=alert_id(keys[i], group, ref),
            kind=kind,
            key=keys[i],
            group=group,
            index=i,
            time=float(times[i]),
            ref=ref,
            score=float(res.score[i]),
            threshold=self.open_threshold if kind == "opened" else self.close_threshold,
            values={f: float(xr[i, j]) for j, f in enumerate(feats)},
            forecast={f: float(res.forecast[i, j]) for j, f in enumerate(feats)},
            contributions=contrib,
            views={
                feats[f]: VIEW_NAMES[int(why[f])]
                for f in range(len(feats))
                if part[f] > 0 and np.isfinite(why[f])
            },
        )

    # -- housekeeping ------------------------------------------------------------------
    def expire(self, now: float) -> list[str]:
        """Evict streams idle (in event time) for longer than ``idle_ttl_s``."""
        if self.config.idle_ttl_s <= 0:
            return []
        return self.table.expire(now, self.config.idle_ttl_s)

    def open_alerts(self) -> list[OpenAlert]:
        """:meth:`streams_in_alert` with where each alert opened: its id (the one its
        alert records carry), the opening event's ref and the stream's last event time."""
        istat = self.table.arrays["istat"]
        fstat = self.table.arrays["fstat"]
        out = []
        for key, group, peak, feats in self.streams_in_alert():
            s = self.table.slot(key)
            ref = int(istat[s, K.I_OPEN_REF])
            last = float(fstat[s, K.F_LAST_T])
            out.append(OpenAlert(key, group, peak, feats, alert_id(key, group, ref), ref, last))
        return out

    def streams_in_alert(self) -> list[tuple[str, int, float, str]]:
        """(key, group, peak score, top features "a,b") of every stream whose alert is open."""
        istat = self.table.arrays["istat"]
        fstat = self.table.arrays["fstat"]
        live = np.flatnonzero((self.table.group >= 0) & (istat[:, K.I_IN_ALERT] == 1))
        feats = self.model.features
        return [
            (
                self.table.key_of(int(s)),
                int(self.table.group[s]),
                float(fstat[s, K.F_PEAK]),
                ",".join(
                    f for i, f in enumerate(feats) if i < 63 and istat[s, K.I_TOP_MASK] >> i & 1
                ),
            )
            for s in live
        ]

    def stream_state(self, key: str) -> dict[str, np.ndarray]:
        """Copies of one stream's state rows (for tests and debugging)."""
        s = self.table.slot(key)
        return {name: arr[s].copy() for name, arr in self.table.arrays.items()}

    def outcome_counts(self) -> Mapping[str, int]:
        return {name: int(self.outcome_totals[i]) for i, name in enumerate(OUTCOME_NAMES)}


def _as_seconds(times: Any, n: int) -> np.ndarray:
    t = np.asarray(times)
    if t.shape != (n,):
        raise InputError(f"times have shape {t.shape}, expected ({n},)")
    if t.dtype.kind == "M":  # datetime64 (np.issubdtype costs ~0.5 us)
        return t.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
    try:
        return np.ascontiguousarray(t, np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"event times must be numbers (seconds) or datetime64: {exc}") from exc
