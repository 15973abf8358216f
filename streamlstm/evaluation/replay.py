"""Replay labelled events through the daemon's detector; per-stream cold-start models."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.errors import InputError
from streamlstm.evaluation.labels import (
    Kinds,
    Window,
    label_points,
    match_label_keys,
    windows_from_labels,
)

log = logging.getLogger(__name__)


@dataclass
class Replay:
    """Per-event results of replaying events through a detector, in replay order.

    keys (n) str, times (n,) float64, x (n, F) raw features, score (n,)
    float32, alert (n,) bool, transition (n,) int8, outcome (n,) int8, judged
    (n,) bool, label (n,) bool; ``windows`` per stream key; ``config`` and
    ``open_threshold`` / ``close_threshold`` are what the detector ran with;
    ``kinds[key][i]`` is the anomaly kind of ``windows[key][i]`` (None: not
    named; a key may be missing when no label names kinds).
    """

    keys: np.ndarray
    times: np.ndarray
    x: np.ndarray
    score: np.ndarray
    alert: np.ndarray
    transition: np.ndarray
    outcome: np.ndarray
    judged: np.ndarray
    label: np.ndarray
    windows: dict[str, list[Window]]
    features: tuple[str, ...]
    config: DetectorConfig
    open_threshold: float
    close_threshold: float
    forecast: np.ndarray | None = None
    hold: np.ndarray | None = None  # (n,) float32 hold scores (None: the score)
    info: dict[str, Any] = field(default_factory=dict)
    kinds: Kinds = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def _groups(self) -> dict[str, np.ndarray]:
        """Stream key -> its event indices (in replay order), in order of first appearance."""
        # cached in info, tagged with the keys array it was built from (a
        # dataclasses.replace() copy shares info but may carry other keys)
        cached = self.info.get("_groups")
        if cached is None or cached[0] is not self.keys:
            uniq, first, inv = np.unique(self.keys, return_index=True, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            bounds = np.r_[0, np.cumsum(np.bincount(inv, minlength=uniq.shape[0]))]
            by_first = np.argsort(first, kind="stable")
            groups = {str(uniq[g]): order[bounds[g] : bounds[g + 1]] for g in by_first}
            cached = (self.keys, groups)
            self.info["_groups"] = cached
        return cached[1]

    def stream_keys(self) -> list[str]:
        """Stream keys in order of first appearance."""
        return list(self._groups())

    def stream_index(self, key: str) -> np.ndarray:
        return self._groups()[key]


def judged_mask(keys: np.ndarray, learn_first: float) -> np.ndarray:
    """(n,) bool: False on the first ``ceil(learn_first * n_s)`` events of every stream."""
    judged = np.ones(keys.shape[0], bool)
    if learn_first <= 0:
        return judged
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    rank = np.empty(keys.shape[0], np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(keys.shape[0]) - np.repeat(starts, counts)
    n_learn = np.ceil(learn_first * counts).astype(np.int64)
    judged[rank < n_learn[inv]] = False
    return judged


def replay(
    detector: Detector,
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    *,
    windows: Mapping[str, list[Window]] | None = None,
    labels: np.ndarray | None = None,
    judged: np.ndarray | None = None,
    chunk: int = 8192,
    keep_forecast: bool = False,
    kinds: Mapping[str, list[str | None]] | None = None,
    label_kinds: np.ndarray | None = None,
) -> Replay:
    """Run events (in the given order) through ``detector`` in micro-batches of ``chunk``.

    Labels come from ``windows`` (per stream key; see :func:`match_label_keys`)
    with the ``kinds`` of those windows (same keys, same order), or from
    per-event 0/1 ``labels``, which are turned into windows, with the kind of
    each anomalous event in ``label_kinds`` ((n,) object, None: not named).
    """
    keys_a = np.asarray(keys, dtype=object)
    n = keys_a.shape[0]
    times = np.asarray(times, np.float64)
    x = np.asarray(x, np.float64)
    score = np.empty(n, np.float32)
    hold = np.empty(n, np.float32)
    alert = np.empty(n, bool)
    trans = np.empty(n, np.int8)
    outcome = np.empty(n, np.int8)
    fc = np.empty((n, x.shape[1]), np.float32) if keep_forecast else None
    key_list = keys_a.tolist()
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        res = detector.process_many(key_list[a:b], times[a:b], x[a:b])
        score[a:b] = res.score
        hold[a:b] = res.hold
        alert[a:b] = res.alert
        trans[a:b] = res.transition
        outcome[a:b] = res.outcome
        if fc is not None:
            fc[a:b] = res.forecast
    uniq = list(dict.fromkeys(key_list))
    if labels is not None:
        lab = np.asarray(labels, bool)
        if lab.shape != (n,):
            raise InputError(f"labels have shape {lab.shape}, expected ({n},)")
        win = {}
        kind_of: Kinds = {}
        for k in uniq:
            idx = np.flatnonzero(keys_a == k)
            row_kinds = None if label_kinds is None else np.asarray(label_kinds, object)[idx]
            win[k], kind_of[k] = windows_from_labels(times[idx], lab[idx], row_kinds)
    else:
        win = match_label_keys(uniq, windows or {})
        kind_of = match_label_keys(uniq, kinds or {})
        for k in uniq:  # a key with windows but no kinds: kinds not named
            if len(kind_of[k]) != len(win[k]):
                if kind_of[k]:
                    raise InputError(
                        f"stream {k!r}: {len(win[k])} windows but {len(kind_of[k])} kinds"
                    )
                kind_of[k] = [None] * len(win[k])
        lab = np.zeros(n, bool)
        for k in uniq:
            if win[k]:
                idx = np.flatnonzero(keys_a == k)
                lab[idx] = label_points(times[idx], win[k])
    return Replay(
        keys=keys_a,
        times=times,
        x=x,
        score=score,
        hold=hold,
        alert=alert,
        transition=trans,
        outcome=outcome,
        judged=np.ones(n, bool) if judged is None else np.asarray(judged, bool),
        label=lab,
        windows=win,
        features=tuple(detector.model.features),
        config=detector.config,
        open_threshold=detector.open_threshold,
        close_threshold=detector.close_threshold,
        forecast=fc,
        kinds=kind_of,
    )


def learn_first_models(
    keys: np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    learn_first: float,
    *,
    init: Any = None,
    train_config: Any = None,
    detector_config: DetectorConfig | None = None,
    baseline: bool = False,
) -> dict[str, Any]:
    """One model per stream, learnt from that stream's first ``learn_first`` share only.

    ``baseline=True`` gives the last-value forecaster (normalisation, the
    per-stream normalisation of ``train_config`` and residual scale from the
    same share) instead of training an LSTM, for the
    comparison SCORING.md asks for. Otherwise the cold-start learner
    (:func:`streamlstm.training.online.learn_first_part`) trains an LSTM on
    the learning part, calibrated for the detector settings
    ``detector_config`` (its false-alarm budget comes from
    ``train_config``); ``init`` fine-tunes that model instead of starting
    from random weights.
    """
    from streamlstm.model.baselines import fit_normalisation, last_value_model

    mask = ~judged_mask(keys, learn_first)
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys.tolist()):
        idx = np.flatnonzero((keys == key) & mask)
        if idx.size < 8:
            raise InputError(
                f"stream {key!r}: only {idx.size} events in its first {learn_first:.0%}; "
                "need at least 8 to learn from (raise --learn-first)"
            )
        xs, ts = x[idx], times[idx]
        if baseline:
            mean, std = fit_normalisation(xs)
            m = last_value_model(features, mean, std)
            sn = getattr(train_config, "stream_norm", "off")
            if sn != "off":  # the same per-stream normalisation a trained model would get
                m = m.with_stream_norm(sn, train_config.norm_window)
            r = np.diff(m.stream_inputs(xs).astype(np.float64), axis=0)
            scale = robust_scale(r)
            out[key] = m.with_calibration(scale, None, {"resid_source": "learning part"})
            continue
        out[key] = _learn(key, ts, xs, features, init, train_config, detector_config)
    return out


def robust_scale(r: np.ndarray) -> np.ndarray:
    """1.4826 MAD per column, floored (a constant feature must not divide by ~0)."""
    med = np.nanmedian(r, axis=0)
    s = 1.4826 * np.nanmedian(np.abs(r - med), axis=0)
    sd = np.nanstd(r, axis=0)
    s = np.where(np.isfinite(s) & (s > 0), s, sd)
    return np.where(np.isfinite(s) & (s > 1e-3), s, 1e-3)


def _learn(
    key: str,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    init: Any,
    train_config: Any,
    detector_config: DetectorConfig | None,
) -> Any:
    """Train (or fine-tune ``init``) and calibrate on one stream's learning part."""
    from streamlstm.training.online import learn_first_part

    log.info("stream %s: learning from its first %d events", key, times.shape[0])
    return learn_first_part(
        [key] * times.shape[0],
        times,
        x,
        features,
        config=train_config,
        init=init,
        detector_config=detector_config,
    )


def replay_per_stream(
    models: Mapping[str, Any],
    keys: np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    config: DetectorConfig,
    **kw: Any,
) -> Replay:
    """Replay every stream through its own detector (one model per stream), then merge.

    Each stream sees all its events (its learning part warms the state up)
    in file order; the merged replay keeps the original event order.
    """
    parts = []
    order = []
    for key, model in models.items():
        idx = np.flatnonzero(keys == key)
        det = Detector(model, config)
        sub: dict[str, Any] = {
            k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in kw.items()
        }
        parts.append(replay(det, keys[idx], times[idx], x[idx], **sub))
        order.append(idx)
    return merge_replays(parts, np.concatenate(order) if order else np.zeros(0, np.int64))


def merge_replays(parts: Sequence[Replay], positions: np.ndarray | None = None) -> Replay:
    """One replay from several (distinct streams); ``positions`` puts events back in order.

    The thresholds are those of the first part; with per-stream calibrated
    models they differ, and ``info["open_thresholds"]`` keeps each stream's.
    """
    if not parts:
        raise InputError("no streams to evaluate")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    inv = None
    if positions is not None:
        inv = np.empty_like(positions)
        inv[positions] = np.arange(positions.shape[0])

    def put(a: np.ndarray) -> np.ndarray:
        return a if inv is None else a[inv]

    windows: dict[str, list[Window]] = {}
    kinds: Kinds = {}
    thresholds: dict[str, float] = {}
    for p in parts:
        windows.update(p.windows)
        kinds.update(p.kinds)
        for k in p.stream_keys():
            thresholds[k] = p.open_threshold
    fc = None
    if all(p.forecast is not None for p in parts):
        fc = put(cat("forecast"))
    hold = put(cat("hold")) if all(p.hold is not None for p in parts) else None
    first = parts[0]
    return Replay(
        keys=put(cat("keys")),
        times=put(cat("times")),
        x=put(cat("x")),
        score=put(cat("score")),
        hold=hold,
        alert=put(cat("alert")),
        transition=put(cat("transition")),
        outcome=put(cat("outcome")),
        judged=put(cat("judged")),
        label=put(cat("label")),
        windows=windows,
        features=first.features,
        config=first.config,
        open_threshold=first.open_threshold,
        close_threshold=first.close_threshold,
        forecast=fc,
        info={"open_thresholds": thresholds},
        kinds=kinds,
    )
