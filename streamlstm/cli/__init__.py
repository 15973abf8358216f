"""``streamlstm`` entry point: one command, one module per subcommand.

Each module in :mod:`streamlstm.cli` exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Only this module
configures logging handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streamlstm import __version__
from streamlstm.errors import StreamlstmError

# Order shown in --help. A module that is missing (a partial install) is skipped.
COMMANDS = (
    "demo",
    "run",
    "check_config",
    "score",
    "train",
    "evaluate",
    "import_torch",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlstm",
        description="Streaming anomaly detection with one LSTM state per stream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamlstm {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity",
    )
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
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
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
