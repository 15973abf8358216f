"""Fit the forecaster on history: truncated BPTT windows over a whole fleet.

>>> from streamlstm.examples.synth import FleetSpec, generate_fleet
>>> fleet = generate_fleet(FleetSpec(n_streams=2, n_steps=120, anomaly_rate=0, seed=1))
>>> keys, times, x, _ = fleet.events()
>>> cfg = TrainConfig(hidden=4, window=16, batch=4, epochs=1, progress=False)
>>> model, report = train_model(keys, times, x, fleet.features, cfg)
>>> model.describe(), report.epochs_run
('LSTM layers=1 hidden=4 features=temp,pressure,flow,vibration inputs=changes', 1)

How an epoch works: every stream's training part is cut into windows of
``window`` steps at a random offset (so window edges move between epochs);
the windows of all streams are shuffled and grouped into minibatches of
``batch``; each window starts from a zero state, as a new stream does in the
detector. The loss is the mean squared one-step forecast error in
normalised units (:mod:`streamlstm.kernels.train`). Adam updates the
weights after each minibatch, with the gradient clipped to a global norm of
``clip``. After each epoch the validation loss is the same error on the held
out last part of every stream, forecast with a state warmed up on the
``4 * window`` events before it; training stops after ``patience`` epochs
without improvement (and at least ``_MIN_STEPS_BEFORE_STOP`` optimizer steps) and the
best weights are kept.

Same data + same config (seed included) -> bit-identical weights, whatever
the number of threads (the kernels sum gradients in a fixed chunk order).

Length: the training loop, its report and the epoch bookkeeping (early stop,
backtracking, the last-value rule) change together; data preparation, calibration and
kernels are elsewhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streamlstm.errors import InputError, TrainingError
from streamlstm.kernels import train as KT
from streamlstm.kernels.norm import DEFAULT_WINDOW
from streamlstm.model import Model
from streamlstm.training.data import Prepared, prepare
from streamlstm.training.forecast import naive_loss, run_streams
from streamlstm.training.init import as_delta, last_value_start
from streamlstm.training.progress import Progress, fmt_seconds

_IMPROVE = 1e-4  # relative val-loss drop that counts as progress (stops on noise-level gains)
# A trained model replaces its last-value start only when its validation loss is this much
# lower: a gain of a few percent is within the noise of a short validation part, and the
# detector flags more with the plain last value there (see benchmarks/quality.md)
_KEEP_MARGIN = 0.05


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (the ``streamlstm train`` flags).

    season: period in events of a seasonal-naive baseline to report (None: none).
    clip: global gradient-norm clip. burn_in: first steps of each window
    that carry no loss (the state is still cold there). threads: numba
    threads (None = numba's default). max_windows: cap on windows per epoch
    (None = all; a random subset each epoch on huge histories).
    calibrate / false_alarms_per_week: after training, measure resid_scale on
    the validation residuals and pick the open threshold for that budget
    (see :mod:`streamlstm.training.calibrate`); None = no threshold.
    false_alarms_per_day: a budget for the whole pipeline (every stream's
    openings together, per day), used instead of the per-stream weekly one
    when set (``streamlstm train``'s default: 1 a day).
    start: initial weights, "last_value" (a model that starts as the
    last-value forecaster, :mod:`streamlstm.training.init`) or "random"
    (PyTorch's initialisation). Measured on a synthetic fleet, four NAB
    series and SKAB (validation MSE / last-value MSE): as good or better on
    all but two spiky NAB series, where it lost ~5%; on a fleet whose
    streams sit at different levels, 1.0 against 4.1 for a random start.
    The starting model is scored as "epoch 0", so training never returns
    a model worse on validation than its start.
    min_values_per_weight: a last-value start is trained only when the
    training targets (events x features) number at least this many per
    weight; below that the last-value forecaster is kept and the report says
    why. Measured: a 1x32 LSTM fitted to 600 values of a NAB series (4,513
    weights) beat the last value by 36-73% MSE on 150 held-out events, and
    then raised 2.8x its false alerts through the regime scorer (NAB 19.9
    against 36.2, benchmarks/quality.md).
    stream_norm / norm_window: train for per-stream input normalisation
    ("off", "warmup" or "ewm" over ``norm_window`` events; see
    :mod:`streamlstm.kernels.norm` and ``DetectorConfig.stream_norm``): every
    stream's history is re-standardised with its own statistics exactly as
    the detector will, and the model file records it, so a detector left at
    ``stream_norm: model`` applies it. A fine-tuned model keeps its own.
    delta: a model of changes (``Model.delta``, ``streamlstm train --inputs``): the
    cell reads each feature's change since the stream's previous event and the
    forecast is the last value plus the head's output, starting from a zero head
    (the exact last value). A model of levels, trained on SKAB's anomaly-free run,
    forecast its test runs (at other operating points, ~40 training spreads away)
    with MSE ~2,000x the last value's; a model of changes beats the last value
    there by ~40%, and on the synthetic fleet by 7-9% (levels: 2%). Not with
    ``stream_norm`` (a model of changes needs none; there the model reads levels).
    lr_decay: factor applied to the learning rate after every epoch without
    improvement (1 = constant; 0.5-0.7 helped on smooth series and hurt on
    spiky ones). warmup_steps: linear learning-rate ramp over the first
    minibatches.
    min_steps: the fewest optimizer steps an epoch takes. ``batch`` is the largest
    minibatch: an epoch with fewer than ``min_steps * batch`` windows takes smaller
    ones (at least one window each), so a single stream of a few thousand events
    (one or two minibatches of 32 windows of 64) is trained by more than a handful
    of steps (0: ``batch`` always). Measured (2026-12-08, ``benchmarks/quality.md``):
    a noisy sine beside 24 command channels, 2,000 training events, went from one
    step an epoch and the last-value start kept (+0.0% MSE) to 16 steps and a model
    40% better than the last value.
    carry_streams: after training, replay each stream's history through the detector and
    keep the state it ends in with the model (``Model.carried``,
    :mod:`streamlstm.detector.carry`), when the history has at most this many streams
    (0: never): the daemon and ``score`` continue such a stream (same key, later events)
    instead of starting it cold. ~2-5 KB a stream in the model file.
    """

    cell: str = "lstm"
    hidden: int = 32
    layers: int = 1
    window: int = 64
    batch: int = 32
    epochs: int = 30
    lr: float = 3e-3
    patience: int = 5
    val_fraction: float = 0.2
    seed: int = 0
    clip: float = 1.0
    burn_in: int = 0
    time_input: bool = False
    season: int | None = None
    threads: int | None = None
    max_windows: int | None = None
    calibrate: bool = True
    false_alarms_per_week: float | None = 1.0
    false_alarms_per_day: float | None = None
    progress: bool = True
    chunk: int = 8
    min_values_per_weight: float = 1.0
    start: str = "last_value"
    lr_decay: float = 1.0
    warmup_steps: int = 0
    stream_norm: str = "off"
    norm_window: int = DEFAULT_WINDOW
    delta: bool = True
    min_steps: int = 32
    carry_streams: int = 1000

    def __post_init__(self) -> None:
        checks = (
            ("cell", self.cell in ("lstm", "gru"), "'lstm' or 'gru'"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("layers", 1 <= self.layers <= 4, "1..4"),
            ("window", self.window >= 2, ">= 2"),
            ("batch", self.batch >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "> 0"),
            ("patience", self.patience >= 1, ">= 1"),
            ("val_fraction", 0 <= self.val_fraction < 1, "in [0, 1)"),
            ("clip", self.clip > 0, "> 0"),
            ("burn_in", 0 <= self.burn_in < self.window, "in [0, window)"),
            ("season", self.season is None or self.season >= 2, ">= 2 events"),
            ("threads", self.threads is None or self.threads >= 1, ">= 1"),
            ("max_windows", self.max_windows is None or self.max_windows >= 1, ">= 1"),
            (
                "false_alarms_per_week",
                self.false_alarms_per_week is None or self.false_alarms_per_week >= 0,
                ">= 0",
            ),
            (
                "false_alarms_per_day",
                self.false_alarms_per_day is None or self.false_alarms_per_day >= 0,
                ">= 0",
            ),
            ("chunk", self.chunk >= 1, ">= 1"),
            ("min_values_per_weight", self.min_values_per_weight >= 0, ">= 0"),
            ("start", self.start in ("last_value", "random"), "'last_value' or 'random'"),
            ("lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            (
                "stream_norm",
                self.stream_norm in ("off", "warmup", "ewm"),
                "'off', 'warmup' or 'ewm'",
            ),
            ("norm_window", self.norm_window >= 1, ">= 1"),
            ("min_steps", self.min_steps >= 0, ">= 0"),
            ("carry_streams", self.carry_streams >= 0, ">= 0"),
        )
        for name, ok, expect in checks:
            if not ok:
                raise ValueError(f"{name} is {getattr(self, name)!r}, expected {expect}")


@dataclass
class EpochStats:
    epoch: int
    loss: float
    val_loss: float | None
    seconds: float


@dataclass
class TrainReport:
    """What happened: per-epoch losses, the baselines and the chosen epoch."""

    config: dict[str, Any]
    n_streams: int
    n_train_events: int
    n_val_events: int
    n_windows: int
    batch: int = 0  # windows per minibatch as trained (``TrainConfig.min_steps`` may shrink it)
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None
    train_loss: float = float("nan")
    initial_val_loss: float | None = None
    last_value_loss: float | None = None
    seasonal_naive_loss: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)
    not_trained: str | None = None  # why the starting model was kept untrained
    carried: int = 0  # streams whose end state the model carries (TrainConfig.carry_streams)
    carry_note: str | None = None
    start_kept: str | None = None  # why the trained epochs were set aside for the start

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def seconds_per_epoch(self) -> float:
        return sum(e.seconds for e in self.history) / max(1, len(self.history))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epochs_run"] = self.epochs_run
        d["seconds_per_epoch"] = self.seconds_per_epoch
        return d

    def _steps_line(self) -> str:
        """``; N steps an epoch (minibatches of B of the W windows)`` when ``min_steps``
        shrank the minibatch, else nothing."""
        asked = int(self.config.get("batch", 0) or 0)
        if not self.batch or not asked or self.batch >= asked:
            return ""
        steps = -(-self.n_windows // self.batch)
        least = int(self.config.get("min_steps", 0) or 0)
        return (
            f"; {steps} steps an epoch: minibatches of {self.batch} of the {self.n_windows} "
            f"windows, not --batch {asked}, for at least --min-steps {least}"
        )

    def summary(self) -> str:
        def f(v: float | None) -> str:
            return "n/a" if v is None or v != v else f"{v:.5f}"

        if self.not_trained:
            return "\n".join(
                [f"not trained: {self.not_trained}",
                 f"baselines on the validation targets: last value {f(self.last_value_loss)}"]
                + self._calibration_lines()
            )  # fmt: skip
        lines = [
            f"trained {self.epochs_run} epoch(s) in {fmt_seconds(self.seconds)} "
            f"({self.seconds_per_epoch:.2f} s/epoch) on {self.n_streams} stream(s), "
            f"{self.n_train_events} training / {self.n_val_events} validation events"
            + (", stopped early" if self.stopped_early else "")
            + self._steps_line(),
            (
                f"best epoch {self.best_epoch}: validation loss {f(self.best_val_loss)} "
                f"(train {f(self.train_loss)}; normalised MSE)"
                if self.best_epoch
                else f"kept the starting model: {self.start_kept}"
                if self.start_kept
                else f"no epoch improved on the starting model (validation loss "
                f"{f(self.best_val_loss)}); it is kept"
            ),
            f"baselines on the same validation targets: last value {f(self.last_value_loss)}"
            + (
                f", seasonal naive {f(self.seasonal_naive_loss)}"
                if self.seasonal_naive_loss is not None
                else ""
            ),
        ]
        if self.best_val_loss is not None and self.last_value_loss:
            gain = 1.0 - self.best_val_loss / self.last_value_loss
            if abs(gain) < 0.01:
                verdict = "forecasts no better than"
            else:
                verdict = "beats" if gain > 0 else "does NOT beat"
            lines.append(f"the model {verdict} the last-value forecast ({100 * gain:+.1f}% MSE)")
        return "\n".join(lines + self._calibration_lines())

    def _calibration_lines(self) -> list[str]:
        lines: list[str] = []
        cal = self.calibration
        if cal.get("threshold") is None and cal.get("reason"):
            lines.append(f"threshold not calibrated: {cal['reason']}")
        elif cal.get("threshold") is not None:
            lines.append(
                f"calibrated open threshold {cal['threshold']:.6g} for {cal.get('budget')}: "
                f"{cal.get('openings')} opening(s) in {cal.get('validation_days', 0):.3g} days "
                f"({cal.get('stream_weeks', 0):.3g} stream-weeks) of validation data"
            )
            days = cal.get("validation_days") or 0.0
            if days > 0 and cal.get("n_streams"):
                lines.append(
                    f"at it, the validation data opened {cal.get('openings', 0) / days:.3g} "
                    f"alert(s)/day over {cal['n_streams']} stream(s): what the pipeline pages "
                    "on normal data"
                )
        if self.carry_note:
            lines.append(self.carry_note)
        return lines


# No early stop before this many optimizer steps: a last-value start is a plateau that
# training leaves only after a few hundred steps, and its first epochs look like a stall
# (one stream of 2,500 events, hidden 16: stopped at the start at epoch 6, +0% MSE; with
# this, +41%; benchmarks/quality.md, "Enough steps an epoch").
_MIN_STEPS_BEFORE_STOP = 500
_OVERSHOOT = 1.05  # an epoch this much worse than the best backtracks to it ...
_BACKTRACKS = 3  # ... at most this many times per training


class Adam:
    """Adam (Kingma & Ba) over a dict of float32 arrays, updated in place."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, b1: float = 0.9,
                 b2: float = 0.999, eps: float = 1e-8) -> None:  # fmt: skip
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        step = np.float32(self.lr * math.sqrt(c2) / c1)
        eps = np.float32(self.eps * math.sqrt(c2))
        for k, p in params.items():
            g = grads[k]
            m, v = self.m[k], self.v[k]
            m *= np.float32(self.b1)
            m += np.float32(1.0 - self.b1) * g
            v *= np.float32(self.b2)
            v += np.float32(1.0 - self.b2) * g * g
            p -= step * m / (np.sqrt(v) + eps)


def clip_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients so their joint L2 norm is at most max_norm; return the norm."""
    norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))
    if norm > max_norm:
        s = np.float32(max_norm / norm)
        for g in grads.values():
            g *= s
    return norm


def minibatch(cfg: TrainConfig, n_windows: int) -> int:
    """Windows per minibatch for an epoch of ``n_windows``: ``cfg.batch``, or fewer so
    that the epoch takes at least ``cfg.min_steps`` optimizer steps.

    >>> minibatch(TrainConfig(batch=32, min_steps=32), 31)  # one stream, 2,000 events
    1
    >>> minibatch(TrainConfig(batch=32, min_steps=32), 118)  # SKAB's anomaly-free run
    3
    >>> minibatch(TrainConfig(batch=32, min_steps=32), 10_000)
    32
    >>> minibatch(TrainConfig(batch=32, min_steps=0), 31)
    32
    """
    if not cfg.min_steps:
        return cfg.batch
    return max(1, min(cfg.batch, n_windows // cfg.min_steps))


def _windows(data: Prepared, window: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(stream, start) of every window of this epoch: a random offset, then every
    ``window`` steps; a stream's last window may be short (padded later)."""
    out = []
    for i, s in enumerate(data.streams):
        n_in = s.n_train - 1  # inputs that have a target inside the training part
        if n_in < 1:
            continue
        off = int(rng.integers(0, window)) if n_in > window else 0
        starts = list(range(off, n_in, window))
        if off > 0:
            starts.insert(0, max(0, off - window))
        out += [(i, a) for a in starts]
    return out


def _fill_batch(
    data: Prepared, wins: Sequence[tuple[int, int]], window: int, burn_in: int,
    x: np.ndarray, y: np.ndarray,
) -> None:  # fmt: skip
    n_feat = data.n_features
    x[:, :, :n_feat] = np.nan
    x[:, :, n_feat:] = 0.0
    y[:] = np.nan
    for r, (i, a) in enumerate(wins):
        s = data.streams[i]
        ln = min(window, s.n_train - 1 - a)
        x[r, :ln] = s.xn[a : a + ln]
        y[r, :ln] = s.xn[a + 1 : a + 1 + ln, :n_feat] if s.yn is None else s.yn[a : a + ln]
        if burn_in and a > 0:
            y[r, :burn_in] = np.nan


def model_from_net(net: KT.Net, data: Prepared, provenance: dict[str, Any]) -> Model:
    p = net.params
    n_layers = net.n_layers
    return Model(
        cell=net.cell,
        features=data.features,
        hidden=net.hid,
        weight_ih=tuple(p[f"weight_ih_l{k}"].copy() for k in range(n_layers)),
        weight_hh=tuple(p[f"weight_hh_l{k}"].copy() for k in range(n_layers)),
        bias_ih=tuple(p[f"bias_ih_l{k}"].copy() for k in range(n_layers)),
        bias_hh=tuple(p[f"bias_hh_l{k}"].copy() for k in range(n_layers)),
        head_weight=p["head.weight"].copy(),
        head_bias=p["head.bias"].copy(),
        norm_mean=data.norm_mean,
        norm_std=data.norm_std,
        resid_scale=np.ones(data.n_features, np.float32),
        time_input=data.time_input,
        dt_mean=data.dt_mean,
        dt_std=data.dt_std,
        provenance=provenance,
        stream_norm=data.stream_norm,
        norm_window=data.norm_window,
        delta=net.delta,
    )


def validation_loss(net: KT.Net, data: Prepared, context: int, chunk: int = 8) -> float | None:
    """Normalised MSE of the one-step forecasts of every stream's validation part."""
    held = [s for s in data.streams if s.n_train < s.n]
    if not held:
        return None
    res = run_streams(net, [s.xn for s in held], [s.n_train for s in held], context, chunk=chunk,
                      targets=[s.targets() for s in held])  # fmt: skip
    return res.loss if res.n else None


def fit(
    data: Prepared,
    config: TrainConfig,
    init: Model | None = None,
    progress: Progress | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> tuple[Model, TrainReport]:
    """Train on prepared data (see :func:`train_model`); no calibration."""
    import numba

    cfg = config
    t_start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    start_fresh = init is None
    if init is None:
        delta = cfg.delta and cfg.stream_norm == "off"
        make = last_value_start if cfg.start == "last_value" and not delta else Model.random
        init = make(
            data.features, hidden=cfg.hidden, layers=cfg.layers, cell=cfg.cell,
            seed=cfg.seed, time_input=data.time_input,
        )  # fmt: skip
        if delta:
            init = as_delta(init, zero_head=cfg.start == "last_value")
    net = KT.Net(init.cell, {k: v.copy() for k, v in init.arrays().items()}, init.delta)
    if net.in_size != data.n_features + (1 if data.time_input else 0):
        raise InputError(
            f"initial model reads {net.in_size} inputs, data has {data.n_features} features"
            + (" + dt" if data.time_input else "")
        )
    opt = Adam(net.params, cfg.lr)
    context = 4 * cfg.window
    held = [s for s in data.streams if s.n_train < s.n]
    report = TrainReport(
        config=asdict(cfg),
        n_streams=len(data.streams),
        n_train_events=data.n_train_events,
        n_val_events=data.n_val_events,
        n_windows=0,
    )
    if held:
        xns = [s.xn for s in held]
        fts = [s.n_train for s in held]
        tgs = [s.targets() for s in held]
        sse, cnt = naive_loss(xns, fts, data.n_features, 1, tgs)
        report.last_value_loss = sse / cnt if cnt else None
        if cfg.season:
            sse, cnt = naive_loss(xns, fts, data.n_features, cfg.season, tgs)
            report.seasonal_naive_loss = sse / cnt if cnt else None
    prog = progress or Progress(cfg.epochs, enabled=cfg.progress)
    n_threads_before = numba.get_num_threads()
    if cfg.threads:
        numba.set_num_threads(min(cfg.threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    workspaces: dict[int, KT.Workspace] = {}
    best: dict[str, np.ndarray] | None = None
    best_score = math.inf
    since_best = 0
    lr_now = cfg.lr
    in_w = net.in_size
    val0_params: dict[str, np.ndarray] | None = None
    if held:
        # Epoch 0: the starting model is a candidate too, so training never returns
        # something worse on validation than what it started from (a last-value
        # start, or the model being fine-tuned).
        val0 = validation_loss(net, data, context, cfg.chunk)
        report.initial_val_loss = val0
        if val0 is not None and math.isfinite(val0):
            best_score = val0
            best = {k: v.copy() for k, v in net.params.items()}
            val0_params = best
            report.best_val_loss = val0
    step = 0
    backtracks = 0
    n_epochs = cfg.epochs
    n_weights = sum(int(v.size) for v in net.params.values())
    n_values = data.n_train_events * data.n_features
    if (
        start_fresh
        and cfg.start == "last_value"
        and n_values < cfg.min_values_per_weight * n_weights
    ):
        n_epochs = 0
        report.not_trained = (
            f"{n_values:,} training values ({data.n_train_events:,} events x "
            f"{data.n_features} features) are too few to fit {n_weights:,} weights "
            f"(min_values_per_weight {cfg.min_values_per_weight:g}); the last-value "
            "forecaster is kept. Give more history, or a smaller --hidden"
        )
        prog.message(f"not training: {report.not_trained}")
    try:
        for epoch in range(1, n_epochs + 1):
            prog.start_epoch(epoch)
            t_ep = time.perf_counter()
            wins = _windows(data, cfg.window, rng)
            if not wins:
                raise TrainingError(
                    "no training window: every stream has fewer than 2 events before the "
                    "validation split; give more history or a smaller --val-fraction"
                )
            perm = rng.permutation(len(wins))
            if cfg.max_windows is not None:
                perm = perm[: cfg.max_windows]
            report.n_windows = len(perm)
            bsz = minibatch(cfg, len(perm))
            report.batch = bsz
            sse_ep, n_ep = 0.0, 0
            n_batches = (len(perm) + bsz - 1) // bsz
            for bi in range(n_batches):
                sel = [wins[j] for j in perm[bi * bsz : (bi + 1) * bsz]]
                b = len(sel)
                x = np.empty((b, cfg.window, in_w), np.float32)
                y = np.empty((b, cfg.window, data.n_features), np.float32)
                _fill_batch(data, sel, cfg.window, cfg.burn_in, x, y)
                ws = workspaces.setdefault(b, KT.Workspace())
                loss, n_present, grads = KT.loss_and_grad(net, x, y, chunk=cfg.chunk, workspace=ws)
                if n_present == 0:
                    continue
                gnorm = clip_global_norm(grads, cfg.clip)
                if not (math.isfinite(loss) and math.isfinite(gnorm)):
                    raise TrainingError(
                        f"the training loss became {loss} (gradient norm {gnorm}) at epoch "
                        f"{epoch}, minibatch {bi + 1}: training diverged. Lower --lr (now "
                        f"{cfg.lr}) or --clip, or look for absurd values in the data; "
                        "no model was written"
                    )
                step += 1
                if cfg.warmup_steps and step <= cfg.warmup_steps:
                    opt.lr = lr_now * step / cfg.warmup_steps
                else:
                    opt.lr = lr_now
                opt.step(net.params, grads)
                sse_ep += loss * n_present
                n_ep += n_present
                prog.batch(bi + 1, n_batches, sse_ep / max(n_ep, 1))
            train_loss = sse_ep / max(n_ep, 1)
            val = validation_loss(net, data, context, cfg.chunk) if held else None
            if val is not None and not math.isfinite(val):
                raise TrainingError(
                    f"the validation loss became {val} at epoch {epoch}: the weights diverged; "
                    f"lower --lr (now {cfg.lr}); no model was written"
                )
            score = val if val is not None else train_loss
            improved = score < best_score * (1.0 - _IMPROVE) or best is None
            if improved:
                best_score = score
                best = {k: v.copy() for k, v in net.params.items()}
                report.best_epoch = epoch
                report.best_val_loss = val
                report.train_loss = train_loss
                since_best = 0
            else:
                since_best += 1
                lr_now *= cfg.lr_decay  # plateau: smaller steps to settle into the minimum
                if (
                    best is not None
                    and score > best_score * _OVERSHOOT
                    and backtracks < _BACKTRACKS
                ):
                    # Clearly worse than the best so far: the steps overshot (a last-value
                    # start is a narrow optimum that lr 3e-3 leaves at once). Back to the
                    # best weights, fresh moments, a third of the step size.
                    backtracks += 1
                    net.params.update({k: v.copy() for k, v in best.items()})
                    lr_now /= 3.0
                    opt = Adam(net.params, lr_now)
                    prog.message(
                        f"epoch {epoch} is worse than epoch {report.best_epoch} "
                        f"({f'{score:.5f}'} vs {best_score:.5f}): back to it at lr {lr_now:.2g}"
                    )
            st = EpochStats(epoch, train_loss, val, time.perf_counter() - t_ep)
            report.history.append(st)
            prog.end_epoch(train_loss, val, best_score if val is not None else None,
                           "*" if improved else "")  # fmt: skip
            if on_epoch is not None:
                on_epoch(st)
            if since_best >= cfg.patience and step >= _MIN_STEPS_BEFORE_STOP:
                report.stopped_early = True
                prog.message(
                    f"early stop: no improvement for {cfg.patience} epoch(s); "
                    f"keeping epoch {report.best_epoch}"
                )
                break
    finally:
        numba.set_num_threads(n_threads_before)
    if (
        start_fresh
        and cfg.start == "last_value"
        and report.best_epoch
        and val0_params is not None
        and report.initial_val_loss is not None
        and report.best_val_loss is not None
        and report.best_val_loss > report.initial_val_loss * (1.0 - _KEEP_MARGIN)
    ):
        gain = 1.0 - report.best_val_loss / report.initial_val_loss
        report.start_kept = (
            f"the best epoch ({report.best_epoch}) forecasts only {100 * gain:.1f}% better "
            f"than the last-value start on validation, less than the {100 * _KEEP_MARGIN:.0f}% "
            "a trained model must gain to replace it; the last-value forecaster is kept"
        )
        prog.message(report.start_kept)
        best = val0_params
        report.best_epoch = 0
        report.best_val_loss = report.initial_val_loss
    if best is not None:
        net.params.update(best)
    report.seconds = time.perf_counter() - t_start
    prov = {
        "source": "streamlstm train",
        "config": asdict(cfg),
        "best_epoch": report.best_epoch,
        "val_loss": report.best_val_loss,
        "last_value_loss": report.last_value_loss,
        "seasonal_naive_loss": report.seasonal_naive_loss,
        "n_streams": report.n_streams,
        "n_train_events": report.n_train_events,
    }
    return model_from_net(net, data, prov), report


def train_model(
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    features: Sequence[str],
    config: TrainConfig | None = None,
    *,
    init: Model | None = None,
    detector_config: Any = None,
    progress: Progress | None = None,
    stream_stats: Mapping[str, np.ndarray] | None = None,
    context: Sequence[str] = (),
) -> tuple[Model, TrainReport]:
    """Train a forecaster for a fleet and calibrate it.

    keys (n) stream keys, times (n,) event times in seconds, x (n, F) raw
    features in the order of ``features`` (NaN = missing); events may be in
    any order (each stream is sorted by time, stably). ``init`` fine-tunes an
    existing model (its normalisation is kept). ``detector_config`` is the
    :class:`~streamlstm.detector.DetectorConfig` the threshold is calibrated
    for (default: the detector's defaults). Returns the model (calibrated
    when ``config.calibrate``) and a report. ``stream_stats`` (key -> the
    detector's ``nstat`` row) starts those streams' per-stream normalisation
    from the detector's statistics instead of from their first event here
    (fine-tuning on recent events). ``context`` names features that are inputs
    only: not in the training and validation losses (the model's forecast of them is
    unused), not scored in calibration or in the daemon (recorded in the model file).
    Raises TrainingError when training diverges and InputError on unusable data.
    """
    cfg = config or TrainConfig()
    norm = None
    if init is not None:
        norm = (init.norm_mean, init.norm_std, init.dt_mean, init.dt_std)
        if tuple(init.features) != tuple(features):
            raise InputError(
                f"features {tuple(features)} differ from the initial model's {init.features}"
            )
    time_input = init.time_input if init is not None else cfg.time_input
    if init is not None:
        stream_norm = (init.stream_norm, init.norm_window)
    else:
        stream_norm = (cfg.stream_norm, cfg.norm_window if cfg.stream_norm != "off" else 0)
    unknown = [c for c in context if c not in features]
    if unknown:
        raise InputError(f"context features {unknown} are not among {list(features)}")
    ctx = tuple(c for c in features if c in context) or (init.context if init else ())
    if ctx and len(ctx) == len(features):
        raise InputError("every feature is a context input: at least one must be scored")
    data = prepare(keys, times, x, features, cfg.val_fraction, time_input, norm, stream_norm,
                   stream_stats)  # fmt: skip
    # context inputs are read, not forecast: the losses count the scored features only
    data.drop_targets(ctx)
    model, report = fit(data, cfg, init=init, progress=progress)
    if ctx:
        model = model.with_context(ctx)
    if cfg.calibrate:
        from streamlstm.training.calibrate import calibrate

        if cfg.progress:
            (progress or Progress(1)).message(
                f"calibrating residual scales and threshold on {data.n_val_events} "
                "held-out events through the detector ..."
            )
        model, info = calibrate(
            model, data, cfg.false_alarms_per_week, detector_config,
            context=4 * cfg.window, chunk=cfg.chunk, false_alarms_per_day=cfg.false_alarms_per_day,
        )  # fmt: skip
        report.calibration = info
    if cfg.carry_streams:
        n_streams = len(data.streams)
        if n_streams > cfg.carry_streams:
            report.carry_note = (
                f"the {n_streams:,} streams' end states are not carried (more than "
                f"--carry-streams {cfg.carry_streams:,}): every stream starts cold when scored"
            )
        else:
            from streamlstm.detector.carry import CARRY_TAIL, carry_states

            if cfg.progress:
                (progress or Progress(1)).message(
                    f"keeping the {n_streams:,} stream(s)' detector state: replaying their "
                    f"history (each stream's last {CARRY_TAIL:,} events at most) ..."
                )
            model, n_kept, n_left = carry_states(model, keys, times, x, detector_config)
            report.carried = n_kept
            left = f"{n_left:,} stream(s) ended in an alert and start cold"
            report.carry_note = (
                f"carried the state of {n_kept:,} stream(s) at the end of their history"
                + (f" ({left})" if n_left else "")
                + ": scored later under the same key, from a later event on, a stream "
                "continues from it instead of starting cold"
                if n_kept
                else f"no stream's end state is carried: {left}"
            )
    return model, report
