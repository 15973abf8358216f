"""``streamlstm evaluate``: replay labelled data through the detector, report quality.

    streamlstm evaluate --model pump.npz --data incidents.csv --labels windows.json \\
        --report report.html
    streamlstm evaluate --data nab/*.csv --labels nab/windows.json --time timestamp \\
        --features value --learn-first 0.15

The events go through the same :class:`~streamlstm.detector.Detector` the
daemon uses, in file order. Labels are a JSON file ``{stream: [[start, end],
...]}`` (times as in the data; a key may also be a file name, as in NAB's
windows.json) or a per-row 0/1 ``--label-column``. A window may name its
anomaly kind (``[start, end, "spike"]``, or ``spike`` instead of ``1`` in the
column; :mod:`streamlstm.evaluation.labels`); then the output also has a
per-kind table (windows, caught, share caught, median time to detect, held)
and the per-window log shows each window's kind. What is counted is defined
in :mod:`streamlstm.evaluation`. A text table goes to stdout; ``--report``
writes a self-contained HTML report (or one PNG when it ends in ``.png``);
``--json`` writes every number (``kinds``: the per-kind table; ``windows``:
every counted window).

``--config pipeline.yaml [--pipeline NAME]`` takes the detector settings (and
the model, unless ``--model`` is given) from the daemon's own configuration,
so the numbers are those of the deployment; flags that are set override it.

``--learn-first F`` is the cold start (a series with no separate history):
each stream gets its own model, learnt from its first ``F`` share only
(fine-tuned from ``--model`` when given; ``--baseline last-value`` uses the
last-value forecaster instead, the reference every model must beat); those
events warm the stream up and are not judged.

Length: arguments, data reading for three label formats, the cold-start learners and the
report wiring of one command; the engine parts live in streamlstm.evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm import evaluation as E
from streamlstm.detector import (
    DEFAULT_NORM_WINDOW,
    DEFAULT_OPEN,
    DEFAULT_OPEN_ABSOLUTE,
    DEFAULT_OPEN_REGIME,
    OUTCOME_NAMES,
    Detector,
    DetectorConfig,
)
from streamlstm.errors import InputError
from streamlstm.evaluation.report import format_text, write_report
from streamlstm.io.tabular import EventReader, sniff_separator, stream_name_for
from streamlstm.model import load

NAME = "evaluate"
HELP = "replay labelled data through the detector; report windows caught, false alerts, F1"

log = logging.getLogger(__name__)
_D = DetectorConfig()


def _unset(text: str) -> str:
    """Help of a flag with no default: "%(default).0s" stops "(default: None)" (as score)."""
    return text + "%(default).0s"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input")
    src.add_argument("--model", help=_unset("model file (.npz); optional with --learn-first"))
    src.add_argument(
        "--data",
        nargs="+",
        required=True,
        help=_unset(
            "event files (CSV or JSON-lines, .gz ok); a file without a key column "
            "is one stream named after the file"
        ),
    )
    src.add_argument(
        "--labels",
        help=_unset('JSON {stream: [[start, end(, "kind")], ...]} of anomaly windows'),
    )
    src.add_argument(
        "--label-column",
        help=_unset(
            "per-row label column (instead of --labels): 0/1, or an anomaly kind name "
            "for anomalous rows"
        ),
    )
    src.add_argument("--key", help=_unset("stream key column; unset: one stream per file"))
    src.add_argument(
        "--time",
        help=_unset(
            "event time column, epoch number or ISO-8601; unset: timestamp, time, "
            "datetime or ts if present, else row order"
        ),
    )
    src.add_argument(
        "--time-unit", default="s", choices=["s", "ms", "us", "ns"], help="unit of numeric times"
    )
    src.add_argument("--sep", help=_unset("CSV delimiter; unset: guessed from the header"))
    src.add_argument(
        "--features",
        help=_unset(
            "comma-separated feature columns; unset: the model's features, or without "
            "a model every column but key, time and label"
        ),
    )
    cold = p.add_argument_group("cold start")
    cold.add_argument(
        "--learn-first",
        type=float,
        default=0.0,
        help="learn each stream's model from its first share (0-1) and judge "
        "the rest (0 = use --model as is, judge everything)",
    )
    cold.add_argument(
        "--baseline",
        choices=["lstm", "last-value"],
        default="lstm",
        help="what --learn-first learns: an LSTM, or the last-value forecaster",
    )
    cold.add_argument(
        "--learn-scope",
        choices=["stream", "fleet"],
        default="stream",
        help="--learn-first LSTM: one model per stream, or one for all streams (faster on "
        "big fleets; the last-value baseline is always per stream)",
    )
    cold.add_argument("--hidden", type=int, default=32, help="LSTM size for --learn-first")
    cold.add_argument("--epochs", type=int, default=30, help="max epochs for --learn-first")
    cold.add_argument(
        "--false-alarms-per-week",
        type=float,
        default=1.0,
        help="budget the --learn-first threshold is calibrated for",
    )
    cold.add_argument("--seed", type=int, default=0, help="training seed")
    det = p.add_argument_group(
        "detector", "unset flags take the --config pipeline's setting, else the default shown"
    )
    det.add_argument(
        "--config",
        help=_unset("daemon YAML: evaluate with that pipeline's detector settings (and model)"),
    )
    det.add_argument(
        "--pipeline", help=_unset("pipeline name in --config; unset: the first pipeline")
    )
    det.add_argument(
        "--threshold",
        type=float,
        help=_unset(
            "open threshold; unset: the model's calibrated one, else the detector's "
            f"default ({DEFAULT_OPEN_REGIME}; {DEFAULT_OPEN} with --scorer forecast, "
            f"{DEFAULT_OPEN_ABSOLUTE} with --no-stream-scale too)"
        ),
    )
    det.add_argument(
        "--close-threshold",
        type=float,
        help=_unset("close threshold; unset: derived from the open one"),
    )
    for flag, field_name, kind, text in _DETECTOR_FLAGS:
        det.add_argument(
            flag,
            type=kind,
            default=None,
            help=_unset(f"{text} (default {getattr(_D, field_name)})"),
        )
    det.add_argument(
        "--no-stream-scale",
        action="store_true",
        help="score calibrated residuals absolutely, not against each stream's recent errors",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--report", help=_unset("write an HTML report (or a PNG when the name ends .png)")
    )
    out.add_argument("--json", help=_unset("write every number as JSON"))
    out.add_argument("--plot-max", type=int, default=12, help="most streams plotted")
    out.add_argument("--rows", type=int, default=50, help="most streams in the text table")
    out.add_argument("--no-sweep", action="store_true", help="skip the threshold sweep")
    out.add_argument("--batch", type=int, default=8192, help="events per detector call")


_DETECTOR_FLAGS = (
    ("--scorer", "scorer", str, "regime (distance from the stream's normal) or forecast"),
    ("--min-run", "min_run", int, "scores >= open needed to open"),
    ("--close-run", "close_run", int, "scores < close needed to close"),
    ("--cooldown", "cooldown_s", float, "seconds after a close with no new alert"),
    ("--warmup", "warmup", int, "events before a stream may alert"),
    ("--smooth", "smooth", int, "EWMA span of the error"),
    ("--stream-norm", "stream_norm", str,
     "per-stream input normalisation: model, off, warmup or ewm; with --learn-first "
     "the models are trained for it"),
    ("--norm-window", "norm_window", int, "events of --stream-norm's warm-up (0 = the model's)"),
)  # fmt: skip


def pipeline_settings(args: argparse.Namespace) -> tuple[DetectorConfig | None, Path | None]:
    """(detector settings, model path) of the --config pipeline, or (None, None).

    Only the detector and the model path are used: evaluate connects to
    nothing, so Kafka secrets named in the file need not be set.
    """
    if not args.config:
        return None, None
    from streamlstm.service.config import load_config

    cfg = load_config(args.config, env=_AnyEnv())
    pipes = cfg.pipelines
    if args.pipeline:
        try:
            pipe = cfg.pipeline(args.pipeline)
        except KeyError:
            names = ", ".join(p.name for p in pipes)
            raise InputError(
                f"{args.config}: no pipeline named {args.pipeline!r}; it has: {names}"
            ) from None
    else:
        pipe = pipes[0]
    return pipe.detector, pipe.model_path


class _AnyEnv(dict):  # type: ignore[type-arg]
    """Environment for secrets evaluate does not use: every variable "is set"."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "unused-by-evaluate"

    def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
        return "unused-by-evaluate"


def detector_config(args: argparse.Namespace, base: DetectorConfig | None = None) -> DetectorConfig:
    """``base`` (the --config pipeline's settings, else the defaults) with the set flags."""
    values = (base or DetectorConfig()).as_dict()
    if args.threshold is not None:
        values["open_threshold"] = args.threshold
    if args.close_threshold is not None:
        values["close_threshold"] = args.close_threshold
    for _, name, _, _ in _DETECTOR_FLAGS:
        v = getattr(args, name if name != "cooldown_s" else "cooldown")
        if v is not None:
            values[name] = v
    if args.no_stream_scale:
        values["stream_scale"] = False
    try:
        return DetectorConfig(**values)
    except ValueError as exc:
        raise InputError(f"invalid detector option: {exc}") from exc


# -- reading ------------------------------------------------------------------------
_TIME_NAMES = ("timestamp", "time", "datetime", "ts", "date", "event_time")


def header_columns(path: Path, sep: str | None) -> list[str]:
    """Column names of a CSV header or of the first JSON-lines object."""
    import gzip

    raw = path.open("rb")
    try:
        head = raw.read(2)
        raw.seek(0)
        fh = gzip.open(raw, "rt", encoding="utf-8") if head == b"\x1f\x8b" else None
        line = (fh.readline() if fh is not None else raw.readline().decode("utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the header: {exc}") from exc
    finally:
        raw.close()
    if line.startswith("{"):
        try:
            return list(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line 1 is not a JSON object: {exc}") from exc
    import csv

    return next(csv.reader([line], delimiter=sep or sniff_separator(line)))


def read_data(args: argparse.Namespace, model_features: tuple[str, ...] | None) -> dict[str, Any]:
    """Every file's events, concatenated: keys, times, x, labels (or None), features."""
    paths = [Path(p) for p in args.data]
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: data file not found")
    cols = header_columns(paths[0], args.sep)
    time_col = args.time or next((c for c in _TIME_NAMES if c in cols), None)
    if args.features:
        features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    elif model_features is not None:
        features = model_features
    else:
        skip = {args.key, time_col, args.label_column}
        features = tuple(c for c in cols if c not in skip)
    if model_features is not None and len(features) != len(model_features):
        raise InputError(
            f"--features names {len(features)} columns but the model has "
            f"{len(model_features)} features ({', '.join(model_features)})"
        )
    keep = [args.label_column] if args.label_column else []
    keys: list[str] = []
    times, xs, labels, kinds = [], [], [], []
    for p in paths:
        reader = EventReader(
            p,
            features,
            key=args.key,
            time=time_col,
            sep=args.sep,
            time_unit=args.time_unit,
            keep=keep,
        )
        ev = reader.read_all()
        if reader.stats.bad_summary():
            log.warning("%s: non-numeric cells read as missing: %s", p, reader.stats.bad_summary())
        odd = reader.odd_times(ev)
        if odd:
            log.warning("%s", odd)
        keys += ev.keys
        times.append(ev.times)
        xs.append(ev.x)
        if args.label_column:
            flags, row_kinds = E.parse_label_cells(
                ev.extra[args.label_column], f"{p}: column {args.label_column!r}", ev.lines
            )
            labels.append(flags)
            kinds.append(row_kinds)
    return {
        "keys": np.asarray(keys, dtype=object),
        "times": np.concatenate(times),
        "x": np.concatenate(xs),
        "labels": np.concatenate(labels) if labels else None,
        "label_kinds": np.concatenate(kinds) if kinds else None,
        "features": features,
        "time_column": time_col,
    }


# -- the command --------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if not args.labels and not args.label_column:
        raise InputError("give the labels: --labels windows.json or --label-column NAME")
    if not 0.0 <= args.learn_first < 1.0:
        raise InputError(f"--learn-first is {args.learn_first}, expected in [0, 1)")
    base, config_model = pipeline_settings(args)
    model_path = args.model or (
        str(config_model) if config_model and args.learn_first <= 0 else None
    )
    if not model_path and args.learn_first <= 0:
        raise InputError("give --model, or --learn-first F to learn each stream's first part")
    model = load(model_path) if model_path else None
    data = read_data(args, tuple(model.features) if model is not None else None)
    features = model.features if model is not None else data["features"]
    windows, kinds = E.load_labels(args.labels) if args.labels else (None, None)
    cfg = detector_config(args, base)
    keys, times, x = data["keys"], data["times"], data["x"]
    judged = E.judged_mask(keys, args.learn_first)
    kw: dict[str, Any] = {"judged": judged, "chunk": args.batch}
    if data["labels"] is not None:
        kw["labels"] = data["labels"]
        kw["label_kinds"] = data["label_kinds"]
    else:
        kw["windows"] = windows
        kw["kinds"] = kinds
    t0 = time.perf_counter()
    if args.learn_first > 0:
        from streamlstm.training.trainer import TrainConfig

        sn, window = cfg.stream_norm, cfg.norm_window or DEFAULT_NORM_WINDOW
        tcfg = TrainConfig(
            hidden=args.hidden,
            epochs=args.epochs,
            seed=args.seed,
            false_alarms_per_week=args.false_alarms_per_week,
            progress=False,
            stream_norm=sn if sn in ("warmup", "ewm") else "off",
            norm_window=window,
        )
        if args.learn_scope == "fleet" and args.baseline == "lstm":
            # one model for every stream, learnt from all their learning parts
            from streamlstm.training.online import learn_first_part

            part = ~judged
            fleet_model = learn_first_part(
                keys[part],
                times[part],
                x[part],
                features,
                config=tcfg,
                init=model,
                detector_config=cfg,
            )
            learnt = time.perf_counter()
            rep = E.replay(Detector(fleet_model, cfg), keys, times, x, **kw)
        else:
            models = E.learn_first_models(
                keys,
                times,
                x,
                features,
                args.learn_first,
                init=model,
                train_config=tcfg,
                detector_config=cfg,
                baseline=args.baseline == "last-value",
            )
            learnt = time.perf_counter()
            rep = E.replay_per_stream(models, keys, times, x, cfg, **kw)
    else:
        assert model is not None
        learnt = t0
        rep = E.replay(Detector(model, cfg), keys, times, x, **kw)
    replayed = time.perf_counter()
    _warn_about_labels(rep, windows)
    total, per = E.quality(rep)
    points = [] if args.no_sweep else E.sweep(rep)
    swept = time.perf_counter()
    print(format_text(total, per, points, rep.open_threshold, max_rows=args.rows))
    if rep.info.get("open_thresholds"):
        print(f"(each stream at its own calibrated threshold: {threshold_text(rep)})")
    rejected = outcome_text(rep, rejected_only=True)
    if rejected:
        print(f"rejected events (not scored, as the daemon would): {rejected}", file=sys.stderr)
    timing = {
        "learn_s": round(learnt - t0, 3),
        "replay_s": round(replayed - learnt, 3),
        "sweep_s": round(swept - replayed, 3),
        "sweep_points": len(points),
        "events": len(rep),
    }
    print(
        f"\n{len(rep)} events, {len(per)} streams; learn {timing['learn_s']}s, replay "
        f"{timing['replay_s']}s, sweep of {len(points)} thresholds {timing['sweep_s']}s",
        file=sys.stderr,
    )
    details = {
        "model": model_path
        or f"learnt from the first {args.learn_first:.0%} of each stream ({args.baseline})",
        "settings": f"{args.config} pipeline {args.pipeline or 'first'}"
        if args.config
        else "flags",
        "data": ", ".join(args.data),
        "labels": args.labels or f"column {args.label_column}",
        "features": ", ".join(features),
        "open threshold": threshold_text(rep),
        "events by outcome": outcome_text(rep),
        "detector": json.dumps(cfg.as_dict()),
        "judged events": f"{int(rep.judged.sum())} of {len(rep)}",
    }
    if args.report:
        path = write_report(
            args.report, rep, total, per, points, details=details, max_streams=args.plot_max
        )
        print(f"report written to {path}", file=sys.stderr)
    if args.json:
        doc = {
            "overall": _clean(total.summary()),
            "streams": {k: _clean(q.summary()) for k, q in per.items()},
            "kinds": {k: _clean(kq.summary()) for k, kq in E.kind_quality(total).items()},
            "windows": E.window_records(per),
            "sweep": [{"threshold": p.threshold, **_clean(p.quality.summary())} for p in points],
            "open_threshold": rep.open_threshold,
            "open_thresholds": rep.info.get("open_thresholds", {}),
            "timing": timing,
            "details": details,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def threshold_text(rep: E.Replay) -> str:
    per = rep.info.get("open_thresholds") or {}
    values = sorted(set(per.values()))
    if len(values) <= 1:
        return f"{(values[0] if values else rep.open_threshold):.6g}"
    median = float(np.median(list(per.values())))
    return f"per stream, {values[0]:.4g} .. {values[-1]:.4g} (median {median:.4g})"


def outcome_text(rep: E.Replay, rejected_only: bool = False) -> str:
    counts = np.bincount(rep.outcome.astype(np.int64), minlength=len(OUTCOME_NAMES))
    parts = [
        f"{name} {int(counts[i])}"
        for i, name in enumerate(OUTCOME_NAMES)
        if counts[i] and (not rejected_only or name not in ("ok", "imputed"))
    ]
    return ", ".join(parts)


def _warn_about_labels(rep: E.Replay, windows: dict[str, list[E.Window]] | None) -> None:
    """Say when label keys match no stream: a wrong --key or file name loses every window."""
    if windows is None:
        return
    streams = rep.stream_keys()
    known = set(streams)
    unused = [k for k in windows if k not in known and stream_name_for(k) not in known]
    if unused:
        shown = ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else "")
        log.warning(
            "%d label key(s) match no stream in the data: %s (stream keys look like: %s)",
            len(unused),
            shown,
            ", ".join(streams[:3]),
        )
