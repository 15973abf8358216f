"""``streamlstm train``: fit a model on a history file, calibrate it, write the model file.

    streamlstm train --data history.csv.gz --key machine --time ts \\
        --features temp,pressure,flow --out pump.npz

The file (CSV or JSON-lines, gzip accepted; see :mod:`streamlstm.io.tabular`)
holds the events of one or many streams; one model is trained for all of
them. Progress (epoch, loss, validation loss, ETA) goes to stderr, then a
summary that compares the model with a last-value forecaster (and a seasonal
naive one with ``--season``). The model file is written only when training
succeeded (atomically), so a diverged run never leaves a broken file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.detector import DetectorConfig
from streamlstm.errors import InputError
from streamlstm.io.features import context_names
from streamlstm.io.tabular import EventReader
from streamlstm.training.data import flag_features
from streamlstm.training.trainer import TrainConfig, TrainReport, train_model

NAME = "train"
HELP = "train an LSTM/GRU forecaster on a history file and calibrate its alert threshold"

log = logging.getLogger(__name__)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}


def _unset(text: str) -> str:
    """Help of a flag whose default is None: the words say what unset means.

    The CLI's ArgumentDefaultsHelpFormatter appends "(default: None)" unless the
    help mentions the default; "%(default).0s" mentions it and prints nothing.
    """
    return text + "%(default).0s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", required=True, help=_unset("history file (CSV or JSON-lines, .gz ok)"))
    p.add_argument("--features", help=_unset("comma-separated feature columns"))
    p.add_argument(
        "--config",
        help=_unset(
            "pipeline YAML: decode --data (JSON lines) as the "
            "daemon does, features from its decode section"
        ),
    )
    p.add_argument("--pipeline", help=_unset("pipeline of --config (default: the only one)"))
    p.add_argument(
        "--context",
        help=_unset(
            "comma-separated features that are inputs only, never scored (commands, "
            "calendar); 'auto' (the default): the features with only 0/1 values in the "
            "history; 'none': every feature scored; with --config: the decode section's roles"
        ),
    )
    p.add_argument("--out", required=True, help=_unset("model file to write (.npz)"))
    p.add_argument("--key", default=None, help=_unset("stream key column (default: one stream)"))
    p.add_argument("--time", default=None, help=_unset("event time column (default: row number)"))
    p.add_argument("--time-unit", default="s", choices=["s", "ms", "us", "ns"],
                   help="unit of numeric times")  # fmt: skip
    p.add_argument(
        "--sep", default=None, help=_unset("CSV delimiter (default: guessed from the header)")
    )
    p.add_argument("--cell", default=d.cell, choices=["lstm", "gru"], help="recurrent cell")
    p.add_argument("--hidden", type=int, default=d.hidden, help="hidden units per layer")
    p.add_argument("--layers", type=int, default=d.layers, help="stacked layers")
    p.add_argument("--window", type=int, default=d.window, help="BPTT window (events)")
    p.add_argument("--batch", type=int, default=d.batch, help="windows per minibatch (at most)")
    p.add_argument("--min-steps", type=int, default=d.min_steps,
                   help="fewest optimizer steps an epoch: fewer windows than this x --batch "
                   "take smaller minibatches (0 = always --batch)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs")
    p.add_argument("--carry-streams", type=int, default=d.carry_streams,
                   help="keep each stream's detector state at the end of the history in the "
                   "model file when there are at most this many streams, so that scoring "
                   "continues them instead of starting cold (0 = never)")  # fmt: skip
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=d.clip, help="global gradient-norm clip")
    p.add_argument("--lr-decay", type=float, default=d.lr_decay,
                   help="lr factor after an epoch without improvement (1 = off)")  # fmt: skip
    p.add_argument("--start", default=d.start, choices=["last_value", "random"],
                   help="initial weights: a last-value forecaster, or random")  # fmt: skip
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without validation improvement")  # fmt: skip
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="last part of each stream's time range held out")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (same seed, same model)")
    p.add_argument("--threads", type=int, default=None, help=_unset("CPU threads (default: all)"))
    p.add_argument("--stream-norm", default=d.stream_norm, choices=["off", "warmup", "ewm"],
                   help="per-stream input normalisation the model is trained for and the "
                        "detector then applies (scoring.stream_norm): each stream's mean "
                        "and std learnt from its first --norm-window events, then frozen "
                        "(warmup) or slowly followed (ewm)")  # fmt: skip
    p.add_argument("--inputs", default="changes" if d.delta else "levels",
                   choices=["changes", "levels"],
                   help="what the cell reads: each feature's change since the stream's "
                        "last event, the forecast being the last value plus the model's "
                        "correction (forecasts a stream at a level training never saw), "
                        "or the features' levels")  # fmt: skip
    p.add_argument("--norm-window", type=int, default=d.norm_window,
                   help="events of that warm-up / EWMA time constant")  # fmt: skip
    p.add_argument("--time-input", action="store_true",
                   help="extra input: log time since the stream's previous event")  # fmt: skip
    p.add_argument("--season", default=None,
                   help=_unset("season of the seasonal-naive baseline: events (1440) or a "
                               "duration (1d, 12h, 30m) at the median sampling interval "
                               "(default: no seasonal baseline)"))  # fmt: skip
    p.add_argument("--max-windows", type=int, default=None,
                   help=_unset("at most this many windows per epoch, drawn at random "
                               "(default: all)"))  # fmt: skip
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--false-alarms-per-day", type=float, default=1.0,
                        help="alert budget of the whole pipeline (all streams together) per "
                             "day of normal data, the threshold is calibrated for")  # fmt: skip
    budget.add_argument("--false-alarms-per-week", type=float, default=None,
                        help=_unset("alert budget per stream per week instead (a fleet of N "
                                    "streams then pages N times as often)"))  # fmt: skip
    p.add_argument("--no-threshold", action="store_true",
                   help="calibrate residual scales only, no default threshold")  # fmt: skip
    p.add_argument("--plot", default=None, help=_unset("write the loss curves to this PNG"))
    p.add_argument("--report", default=None, help=_unset("write the training report as JSON"))
    p.add_argument("--quiet", action="store_true", help="no progress output")


def parse_season(text: str | None, times: np.ndarray, keys: list[str]) -> int | None:
    """``1440`` -> 1440 events; ``1d`` -> one day in events at the median sampling interval."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise InputError(f"--season {text!r}: expected a number of events or a duration like 1d")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        return int(value)
    k = np.asarray(keys, dtype=object)
    order = np.lexsort((times, k.astype(str)))
    same = k[order][1:] == k[order][:-1]
    steps = np.diff(times[order])[same]
    steps = steps[steps > 0]
    if steps.size == 0:
        raise InputError("--season as a duration needs event times that advance")
    return max(2, int(round(value * _UNITS[unit] / float(np.median(steps)))))


def plot_losses(report: TrainReport, path: str) -> None:
    from streamlstm.errors import pyplot

    plt = pyplot()

    ep = [e.epoch for e in report.history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [e.loss for e in report.history], "o-", label="training loss")
    if any(e.val_loss is not None for e in report.history):
        val = [np.nan if e.val_loss is None else e.val_loss for e in report.history]
        ax.plot(ep, val, "o-", label="validation loss")
    if report.last_value_loss is not None:
        ax.axhline(report.last_value_loss, color="grey", ls="--", label="last value (validation)")
    if report.seasonal_naive_loss is not None:
        ax.axhline(report.seasonal_naive_loss, color="grey", ls=":", label="seasonal naive")
    if report.best_epoch:
        ax.axvline(report.best_epoch, color="green", alpha=0.3, label="kept epoch")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("one-step MSE (normalised units)")
    ax.set_title("streamlstm train")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _Record:
    """A line of a JSON-lines history file, shaped like a Kafka record for the Decoder."""

    __slots__ = ("key", "value", "timestamp", "partition", "offset", "headers")

    def __init__(self, value: bytes, line: int) -> None:
        self.key = None
        self.value = value
        self.timestamp = 0
        self.partition = 0
        self.offset = line
        self.headers: list[Any] = []


class _AnySecret(dict[str, str]):
    """Environment for load_config: training needs no Kafka credentials."""

    def get(self, key: str, default: Any = None) -> str:  # type: ignore[override]
        return "unused-by-train"


def read_with_pipeline(
    path: str, config_path: str, pipeline: str | None, key: str | None, time_field: str | None
) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...], dict[str, int], tuple[str, ...]]:
    """Decode a JSON-lines history with a pipeline's decoder: keys, times, x, features,
    reject counts by reason, context features (the decode section's roles)."""
    from streamlstm.io.decode import Decoder
    from streamlstm.service.config import load_config

    cfg = load_config(config_path, env=_AnySecret())
    if pipeline is None:
        if len(cfg.pipelines) != 1:
            names = ", ".join(p.name for p in cfg.pipelines)
            raise InputError(f"{config_path} has pipelines {names}; choose one with --pipeline")
        pipe = cfg.pipelines[0]
    else:
        try:
            pipe = cfg.pipeline(pipeline)
        except KeyError:
            names = ", ".join(p.name for p in cfg.pipelines)
            raise InputError(f"--pipeline {pipeline!r} is not in {config_path} ({names})") from None
    dec_cfg = replace(pipe.decode, key_field=key or pipe.decode.key_field,
                      time_field=time_field or pipe.decode.time_field)  # fmt: skip
    if dec_cfg.key_field is None or dec_cfg.time_field is None:
        raise InputError(
            f"pipeline {pipe.name!r} takes the stream key or the event time from the Kafka "
            "record, which a history file does not have; name the JSON fields with --key "
            "and --time"
        )
    features = pipe.feature_names
    decoder = Decoder(dec_cfg, features)
    keys: list[str] = []
    times: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    rejects: dict[str, int] = {}
    with open(path, "rb") as fh:
        raw = gzip.open(path, "rb") if fh.read(2) == b"\x1f\x8b" else open(path, "rb")
    with raw:
        batch: list[_Record] = []
        for line_no, line in enumerate(raw, start=1):
            if line.strip():
                batch.append(_Record(line, line_no))
            if len(batch) >= 8192:
                _decode_into(decoder, batch, keys, times, xs, rejects)
                batch = []
        _decode_into(decoder, batch, keys, times, xs, rejects)
    if not keys:
        raise InputError(f"{path}: no record could be decoded ({rejects or 'empty file'})")
    context = context_names(pipe.decode.features)
    return keys, np.concatenate(times), np.concatenate(xs), features, rejects, context


def _decode_into(
    decoder: Any, batch: list[_Record], keys: list[str], times: list[np.ndarray],
    xs: list[np.ndarray], rejects: dict[str, int],
) -> None:  # fmt: skip
    if not batch:
        return
    out = decoder.decode(batch)
    keys += out.keys
    times.append(out.times)
    xs.append(out.x)
    for reason, n in out.reject_counts().items():
        rejects[reason] = rejects.get(reason, 0) + n


def run(args: argparse.Namespace) -> int:
    if args.config:
        if args.features or args.context:
            raise InputError(
                "give --features/--context or --config, not both (--config names them)"
            )
        keys, times, x, features_t, rejects, context = read_with_pipeline(
            args.data, args.config, args.pipeline, args.key, args.time
        )
        features = list(features_t)
        if rejects:
            log.warning(
                "%s: %d record(s) rejected by the decoder, as the daemon would: %s",
                args.data, sum(rejects.values()),
                ", ".join(f"{k} {v}" for k, v in sorted(rejects.items())),
            )  # fmt: skip
    else:
        features = [f.strip() for f in (args.features or "").split(",") if f.strip()]
        if not features:
            raise InputError("--features: name at least one column (or give --config)")
        auto = args.context is None or args.context.strip() == "auto"
        given = "" if auto or args.context.strip() == "none" else args.context
        context = tuple(f.strip() for f in given.split(",") if f.strip())
        unknown = [c for c in context if c not in features]
        if unknown:
            raise InputError(f"--context {','.join(unknown)}: not among --features")
        with EventReader(
            args.data, features, key=args.key, time=args.time, sep=args.sep,
            time_unit=args.time_unit,
        ) as reader:  # fmt: skip
            events = reader.read_all()
            stats = reader.stats
            odd = reader.odd_times(events)
        bad = stats.bad_summary()
        if bad:
            log.warning("%s: %s", args.data, bad)
        if odd:
            log.warning("%s", odd)
        keys, times, x = events.keys, events.times, events.x
        if auto:
            context = flag_features(x, features)
            if context and not args.quiet:
                print(
                    f"context inputs (only 0/1 in the history: commands, flags), not scored: "
                    f"{','.join(context)}; --context none scores them too",
                    file=sys.stderr,
                )
    try:
        config = TrainConfig(
            cell=args.cell,
            hidden=args.hidden,
            layers=args.layers,
            window=args.window,
            batch=args.batch,
            min_steps=args.min_steps,
            carry_streams=args.carry_streams,
            epochs=args.epochs,
            lr=args.lr,
            clip=args.clip,
            lr_decay=args.lr_decay,
            start=args.start,
            patience=args.patience,
            val_fraction=args.val_fraction,
            seed=args.seed,
            threads=args.threads,
            time_input=args.time_input,
            stream_norm=args.stream_norm,
            norm_window=args.norm_window,
            delta=args.inputs == "changes",
            season=parse_season(args.season, times, keys),
            max_windows=args.max_windows,
            false_alarms_per_week=None if args.no_threshold else args.false_alarms_per_week,
            false_alarms_per_day=(
                None
                if args.no_threshold or args.false_alarms_per_week is not None
                else args.false_alarms_per_day
            ),
            progress=not args.quiet,
        )
    except ValueError as exc:
        raise InputError(f"invalid option: {exc}") from exc
    if not args.quiet:
        n_streams = len(set(keys))
        print(
            f"{args.data}: {len(keys)} events, {n_streams} stream(s), features "
            f"{','.join(features)}; training a {args.cell.upper()} {args.layers}x{args.hidden}",
            file=sys.stderr,
        )
    model, report = train_model(
        keys, times, x, features, config, detector_config=DetectorConfig(), context=context
    )
    out = model.save(args.out)
    if not args.quiet:
        print(report.summary(), file=sys.stderr)
        print(f"model written to {out} ({model.describe()})", file=sys.stderr)
    if args.plot:
        plot_losses(report, args.plot)
    if args.report:
        Path(args.report).write_text(json.dumps(report.as_dict(), indent=2, default=str))
    return 0
