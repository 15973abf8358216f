"""``streamlstm run``: the daemon, as systemd or Kubernetes runs it.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 1 when shutdown overran
``service.shutdown_grace_s`` or a pipeline crashed with an unexpected error,
2 for an error an operator can act on (config, model, checkpoint), printed
on stderr.
"""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "run the daemon: consume Kafka, score every event, emit alerts and metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", default="config/pipeline.yaml", help="the YAML pipeline file"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None,
        help="override metrics.port (0 = any free port; the chosen one is logged)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from streamlstm.service.app import Service
    from streamlstm.service.config import load_config

    cfg = load_config(args.config)
    if args.metrics_port is not None:
        cfg = dataclasses.replace(
            cfg, metrics=dataclasses.replace(cfg.metrics, port=args.metrics_port)
        )
    service = Service(cfg)
    service.install_signal_handlers()
    return service.run()
