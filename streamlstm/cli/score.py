"""``streamlstm score``: run a model over an event file, write per-event scores.

The file (CSV or JSON-lines, gzip accepted; see :mod:`streamlstm.io.tabular`) is
fed through the same :class:`~streamlstm.detector.Detector` the daemon uses,
in micro-batches of ``--batch`` events, **in file order**. Rows are not
sorted by time: the daemon cannot sort a live stream either, so an event
older than its stream's previous event is reported with outcome ``too_old``
(and not scored), exactly as the daemon would; sort the file first if that
is not what you want. Results do not depend on ``--batch``.

Output, one row per input event in input order (CSV, or JSON-lines when
``--out`` ends in ``.jsonl``; ``.gz`` compresses; ``-`` is stdout)::

    key, time, score, alert, outcome, transition, forecast_<feature>...

``time`` is copied from the input; ``score`` is in [0, 1] (empty / null when
not scored: a stream's first event, or a rejected one); ``alert`` is 1 while
the stream's alert is open after the event; ``outcome`` is ok, imputed,
too_old, missing, non_finite or out_of_range; ``transition`` is opened,
closed or empty; ``forecast_<f>`` is the forecast the event was compared
with, in the feature's units. A summary (events, streams, outcomes, alerts
with their peak score and top features) goes to stderr.

``--example`` scores the small model and file shipped in
``streamlstm/examples`` and writes to ``./streamlstm-example/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import IO

from streamlstm.detector import (
    DEFAULT_OPEN,
    DEFAULT_OPEN_ABSOLUTE,
    DEFAULT_OPEN_REGIME,
    SCORERS,
    DetectorConfig,
)
from streamlstm.errors import InputError
from streamlstm.io.tabular import EventReader, MissingColumnError
from streamlstm.model import load
from streamlstm.offline.score import ScoreSummary, score_file

NAME = "score"
HELP = "score an event file (CSV/JSON-lines) with a model; write per-event scores and alerts"

log = logging.getLogger(__name__)

# BatchResult.transition codes (streamlstm.kernels.alerts NONE, OPENED, CLOSED) as words.
MAX_ALERTS_LISTED = 50
EXAMPLE_DIR = "streamlstm-example"
EXAMPLE_MODEL = "pump.npz"
EXAMPLE_EVENTS = "pumps.csv"
EXAMPLE_KEY = "machine"
EXAMPLE_TIME = "ts"
_DEFAULTS = DetectorConfig()


def _unset(text: str) -> str:
    """Help for a flag without a default value: says in words what unset means.

    The CLI's ArgumentDefaultsHelpFormatter appends "(default: None)" unless the
    help mentions the default; "%(default).0s" mentions it and prints nothing.
    """
    return text + "%(default).0s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("input")
    src.add_argument("--model", help=_unset("model file (.npz) from train or import-torch"))
    src.add_argument("--input", help=_unset("events: .csv, .jsonl (optionally .gz)"))
    src.add_argument(
        "--key", help=_unset("stream key column; unset: one stream named after the file")
    )
    src.add_argument(
        "--time", help=_unset("event time column, epoch number or ISO-8601; unset: row order")
    )
    src.add_argument(
        "--time-unit", default="s", choices=["s", "ms", "us", "ns"], help="unit of numeric times"
    )
    src.add_argument(
        "--features",
        help=_unset(
            "comma-separated columns fed to the model's features in order; "
            "unset: the model's feature names"
        ),
    )
    src.add_argument("--sep", help=_unset("CSV delimiter; unset: guessed from the header"))
    src.add_argument(
        "--format", choices=["csv", "jsonl"], help=_unset("input format; unset: from the suffix")
    )
    src.add_argument(
        "--example",
        action="store_true",
        help=f"score the shipped example model and events; write to ./{EXAMPLE_DIR}/",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        help=_unset("scores file: .csv or .jsonl (.gz compresses); '-' or unset: stdout"),
    )
    out.add_argument(
        "--plot", help=_unset("PNG of series, forecast and score (one per stream); unset: none")
    )
    out.add_argument("--plot-max", type=int, default=20, help="most streams to plot")
    out.add_argument("--batch", type=int, default=1024, help="events per detector call")
    out.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")
    det = parser.add_argument_group("detector")
    det.add_argument(
        "--threshold",
        type=float,
        help=_unset(
            "open threshold on the score; unset: the model's calibrated one, else "
            f"{DEFAULT_OPEN_REGIME} ({DEFAULT_OPEN} with --scorer forecast, "
            f"{DEFAULT_OPEN_ABSOLUTE} with --no-stream-scale too)"
        ),
    )
    det.add_argument(
        "--scorer",
        choices=SCORERS,
        default=_DEFAULTS.scorer,
        help="regime: distance from the stream's learnt normal, alert held while it "
        "stays away; forecast: the one-step forecast error alone",
    )
    det.add_argument(
        "--close-threshold",
        type=float,
        help=_unset("close threshold; unset: derived from the open one (DetectorConfig)"),
    )
    det.add_argument(
        "--min-run", type=int, default=_DEFAULTS.min_run, help="scores >= open to open"
    )
    det.add_argument(
        "--close-run", type=int, default=_DEFAULTS.close_run, help="scores < close to close"
    )
    det.add_argument(
        "--cooldown",
        type=float,
        default=_DEFAULTS.cooldown_s,
        help="seconds (event time) after a close with no new alert",
    )
    det.add_argument(
        "--warmup", type=int, default=_DEFAULTS.warmup, help="events before a stream may alert"
    )
    det.add_argument(
        "--no-stream-scale",
        action="store_true",
        help="judge errors by the model's calibration alone, not against the stream's "
        "own recent errors",
    )
    det.add_argument(
        "--smooth", type=int, default=_DEFAULTS.smooth, help="EWMA span of the error (1 = none)"
    )
    det.add_argument(
        "--reset-gap",
        type=float,
        default=_DEFAULTS.reset_gap_s,
        help="seconds of silence that reset a stream's state (0 = never)",
    )


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The :class:`DetectorConfig` the flags describe; bad values are an InputError."""
    try:
        return DetectorConfig(
            open_threshold=args.threshold,
            close_threshold=args.close_threshold,
            min_run=args.min_run,
            close_run=args.close_run,
            cooldown_s=args.cooldown,
            warmup=args.warmup,
            stream_scale=not args.no_stream_scale,
            scorer=args.scorer,
            smooth=args.smooth,
            reset_gap_s=args.reset_gap,
        )
    except ValueError as exc:
        raise InputError(f"invalid detector option: {exc}") from exc


# -- alerts --------------------------------------------------------------------------
def _example_args(args: argparse.Namespace) -> None:
    """Fill unset paths and columns with the shipped example's."""
    root = resources.files("streamlstm") / "examples"
    args.model = args.model or str(root / EXAMPLE_MODEL)
    args.input = args.input or str(root / EXAMPLE_EVENTS)
    args.key = args.key or EXAMPLE_KEY
    args.time = args.time or EXAMPLE_TIME
    args.out = args.out or os.path.join(EXAMPLE_DIR, "scores.csv")
    args.plot = args.plot or os.path.join(EXAMPLE_DIR, "scores.png")


def run(args: argparse.Namespace) -> int:
    if args.example:
        _example_args(args)
    if not args.model or not args.input:
        raise InputError("score needs --model and --input (or --example for the shipped demo)")
    if args.batch < 1:
        raise InputError(f"--batch is {args.batch}, expected >= 1")
    if args.plot_max < 1:
        raise InputError(f"--plot-max is {args.plot_max}, expected >= 1")
    model = load(args.model)
    cfg = detector_config(args)
    columns = model.features
    if args.features:
        columns = tuple(c.strip() for c in args.features.split(","))
        if len(columns) != model.n_features:
            raise InputError(
                f"--features names {len(columns)} columns ({', '.join(columns)}) but the model "
                f"takes {model.n_features} ({', '.join(model.features)}); name one per feature"
            )
    reader = EventReader(
        args.input,
        columns,
        key=args.key,
        time=args.time,
        sep=args.sep,
        fmt=args.format,
        time_unit=args.time_unit,
    )
    out = args.out or "-"
    if out != "-" and Path(out).resolve() == Path(args.input).resolve():
        raise InputError(f"--out {out} is the input file; write the scores somewhere else")
    show = not args.quiet and sys.stderr.isatty()
    try:
        summary = score_file(
            model,
            cfg,
            reader,
            out,
            batch=args.batch,
            plot=args.plot,
            plot_max=args.plot_max,
            progress=_TtyProgress(sys.stderr) if show else None,
        )
    except MissingColumnError as exc:
        if args.features or not set(exc.missing) & set(columns):
            raise
        raise MissingColumnError(
            exc.missing,
            f"{exc}; the model's features are {', '.join(model.features)}: name the file's "
            "columns for them in order with --features",
        ) from exc
    if not args.quiet:
        print_summary(summary, args.input, out, sys.stderr)
    elif summary.bad:
        log.warning("%s: non-numeric cells read as missing: %s", args.input, summary.bad)
    return 0


class _TtyProgress:
    """``scored 1,234,567 events`` redrawn in place at most twice a second (TTY only)."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        now = time.perf_counter()
        if now - self.last >= 0.5:
            self.last = now
            rate = n / max(now - self.t0, 1e-9)
            self.fh.write(f"\rscored {n:,} events ({rate:,.0f}/s) ")
            self.fh.flush()

    def done(self) -> None:
        if self.last:
            self.fh.write("\r\x1b[K")
            self.fh.flush()


def print_summary(s: ScoreSummary, src: str, out: str, fh: IO[str]) -> None:
    rate = s.events / s.seconds if s.seconds > 0 else float("inf")
    p = print
    p(
        f"scored {s.events} events of {s.streams} stream(s) from {src} in {s.seconds:.2f} s "
        f"({rate:,.0f} events/s); scores -> {'stdout' if out == '-' else out}",
        file=fh,
    )
    p(
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in s.outcomes.items() if v),
        file=fh,
    )
    if s.carried:
        p(
            f"{s.continued} of the {s.carried} stream(s) whose training history the model "
            "carries continued from it; the others (and every other stream) started cold"
            + (
                ""
                if s.continued
                else ": a stream continues only from an event after its history, under the same key"
            )  # fmt: skip
            + ".",
            file=fh,
        )
    if s.outcomes.get("too_old"):
        p(
            f"  {s.outcomes['too_old']} events were older than their stream's previous event "
            "(the file is scored in file order); sort the file by time to score them",
            file=fh,
        )
    missing = {k: v for k, v in s.missing.items() if v}
    if missing:
        p("missing cells (imputed): " + ", ".join(f"{k} {v}" for k, v in missing.items()), file=fh)
    if s.bad:
        p(f"warning: non-numeric cells read as missing: {s.bad}", file=fh)
    p(
        f"alerts opened: {len(s.alerts)} (open >= {s.open_threshold:g}, "
        f"close < {s.close_threshold:g})",
        file=fh,
    )
    if s.alerts:
        listed = s.alerts[:MAX_ALERTS_LISTED]
        w = max(6, *(len(a.key) for a in listed))
        tw = max(6, *(len(a.opened) for a in listed))
        p(
            f"  {'stream':<{w}}  {'opened':<{tw}}  {'closed':<{tw}}  {'peak':>9}  top features",
            file=fh,
        )
        for a in listed:
            top = ", ".join(
                f"{f} {share:.0%}" + (f" ({a.views[f]})" if f in a.views else "")
                for f, share in a.top
                if share >= 0.05
            )
            closed = a.closed if a.closed is not None else "(still open)"
            p(f"  {a.key:<{w}}  {a.opened:<{tw}}  {closed:<{tw}}  {a.peak:9.6f}  {top}", file=fh)
        if len(s.alerts) > len(listed):
            p(
                f"  ... and {len(s.alerts) - len(listed)} more (the 'transition' column of the "
                "scores has every one)",
                file=fh,
            )
    if s.plots:
        drawn = ", ".join(str(x) for x in s.plots)
        more = f"; {s.plot_skipped} stream(s) not drawn (--plot-max)" if s.plot_skipped else ""
        p(f"plots: {drawn}{more}", file=fh)
