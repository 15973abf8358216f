"""``streamlstm demo --broker HOST:PORT``: the local broker and the live fleet, no daemon.

The README's path to a scoring ``streamlstm run``: config/pipeline.yaml points at
localhost:9092, and this puts a broker there with the demo fleet streaming into its
topic, so the daemon the operator starts has something to score.
"""

from __future__ import annotations

import argparse
import threading

from streamlstm.cli.demo import ALERTS_TOPIC, DEAD_LETTER_TOPIC, EVENTS_TOPIC, _produce
from streamlstm.errors import InputError

LOOPBACK = ("localhost", "127.0.0.1")


def serve_broker(args: argparse.Namespace) -> int:
    """The broker and the fleet without the daemon: what `streamlstm run` needs to score."""
    from streamlstm.kafka.broker import LocalBroker

    host, _, port = args.broker.rpartition(":")
    if host not in LOOPBACK or not port.isdigit():
        raise InputError(
            f"--broker {args.broker}: give localhost:PORT or 127.0.0.1:PORT (the local broker "
            "listens on the loopback address only)"
        )
    stop = threading.Event()
    print(f"streamlstm demo: starting a local broker on {args.broker} ...", flush=True)
    with LocalBroker(port=int(port)) as broker:
        broker.create_topics({EVENTS_TOPIC: 4, ALERTS_TOPIC: 1, DEAD_LETTER_TOPIC: 1})
        print(
            f"  streaming {args.streams} sensors into {EVENTS_TOPIC} on {broker.bootstrap}; "
            "score them with: streamlstm run --config config/pipeline.yaml. Ctrl-C stops.",
            flush=True,
        )
        producer = threading.Thread(
            target=_produce, args=(broker.bootstrap, args, stop), name="demo-fleet", daemon=True
        )
        producer.start()
        try:
            producer.join(args.duration or None)
        except KeyboardInterrupt:
            pass
        stop.set()
        producer.join(5)
    print("streamlstm demo: broker stopped", flush=True)
    return 0
