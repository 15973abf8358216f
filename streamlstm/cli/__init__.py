"""``streamlstm`` entry point: one command, one module per subcommand.

Each module in :mod:`streamlstm.cli` exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Only this module
configures logging handlers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from streamlstm import __version__
from streamlstm.errors import StreamlstmError

# Order shown in --help. A module that is missing (a partial install) is skipped.
COMMANDS = (
    "demo",
    "run",
    "check_config",
    "alerts",
    "inspect_checkpoint",
    "score",
    "train",
    "evaluate",
    "import_torch",
    "bench",
)


LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
# kafka-python logs every connection and metadata refresh at INFO (92 of the demo's 103
# lines); its warnings and errors still show by default.
KAFKA_LOGGERS = ("kafka",)


# Numba's compiler logs every SSA statement at DEBUG (170,000 lines for one kernel):
# --log-level DEBUG must not turn that on; --log-levels numba=DEBUG still can.
QUIET_LOGGERS = {"numba": "WARNING"}


def per_logger_levels(text: str) -> dict[str, str]:
    """``name=LEVEL,name=LEVEL`` -> {name: LEVEL}; argparse reports a bad one (exit 2)."""
    out: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, level = item.partition("=")
        if not name or level.upper() not in LEVELS:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected LOGGER=LEVEL with LEVEL one of {', '.join(LEVELS)}"
            )
        out[name] = level.upper()
    return out


LOG_OPTIONS: tuple[tuple[Any, ...], ...] = (
    ("--log-level", LEVELS, "INFO", "streamlstm's log verbosity", None),
    ("--kafka-log-level", LEVELS, "WARNING", "kafka-python's log verbosity (its INFO is chatty)",
     None),
    ("--log-format", ["text", "json"], "text",
     "text lines, or one JSON object per line (for log shippers)", None),
    ("--log-levels", None, {}, "levels per logger, over the two above: e.g. "
     "streamlstm.kafka=DEBUG,kafka.conn=INFO (numba's compiler stays at WARNING unless named)",
     per_logger_levels),
)  # fmt: skip


def _log_options(p: argparse.ArgumentParser, top: bool) -> None:
    """The logging flags, before or after the subcommand (after wins)."""
    for flag, choices, default, help_, type_ in LOG_OPTIONS:
        kw = {"type": type_, "metavar": "LOGGER=LEVEL,..."} if type_ else {"choices": choices}
        p.add_argument(flag, help=help_, default=default if top else argparse.SUPPRESS,
                       **kw)  # fmt: skip


class Redact(logging.Filter):
    """Secrets never reach the log: kafka-python's DEBUG prints SASL frames in clear
    (``SaslAuthenticateRequest(auth_bytes=b'user\\x00user\\x00<password>')``)."""

    PATTERNS = (
        (re.compile(r"auth_bytes=b(['\"]).*?(?<!\\)\1"), "auth_bytes=<redacted>"),
        (re.compile(r"(password['\"]?\s*[:=]\s*)(['\"]?)[^'\",\s)]+\2", re.I), r"\1<redacted>"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = msg
        for pat, repl in self.PATTERNS:
            red = pat.sub(repl, red)
        if red != msg:
            record.msg, record.args = red, ()
        return True


class ClientTracebacks(logging.Filter):
    """kafka-python logs a lost connection at ERROR with the socket's traceback, once
    per attempt: through a broker outage that is dozens of tracebacks a minute saying
    "broken pipe". Its lines keep their message; the traceback is shown only when the
    client's own loggers are at DEBUG (``--kafka-log-level DEBUG``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.exc_info
            and record.name.split(".")[0] == "kafka"
            and not logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        ):
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(
    level: str,
    kafka_level: str,
    fmt: str,
    stream: TextIO | None = None,
    per_logger: dict[str, str] | None = None,
) -> logging.Handler:
    """One stderr handler on the root logger (replacing any earlier one of ours)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_streamlstm", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._streamlstm = True  # type: ignore[attr-defined]
    handler.addFilter(Redact())
    handler.addFilter(ClientTracebacks())
    if fmt == "json":
        f: logging.Formatter = JsonFormatter()
        f.converter = time.gmtime
    else:
        f = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(f)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    levels = {**QUIET_LOGGERS, **dict.fromkeys(KAFKA_LOGGERS, kafka_level), **(per_logger or {})}
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(getattr(logging, lvl))
    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlstm",
        description="Streaming anomaly detection with one LSTM state per stream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamlstm {__version__}")
    _log_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"streamlstm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"streamlstm.cli.{name}":
                continue
            raise
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=mod.HELP,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        mod.add_arguments(p)
        _log_options(p, top=False)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(
        args.log_level, args.kafka_log_level, args.log_format, per_logger=args.log_levels
    )
    try:
        return int(args._run(args) or 0)
    except StreamlstmError as exc:
        print(f"streamlstm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
