"""The alert sink under a burst: dead letters at full speed, per producer ``linger_ms``.

A producer of bad records makes every event a dead letter; the loop then hands
the sink a record per event. This times ``AlertSink.dead_letter`` for a burst
of ``--n`` records plus the flush that a checkpoint does, on the local tansu
broker, for each ``linger_ms`` given (alternating, ``--repeat`` rounds, the
best of each reported: the machine is shared). Wall and CPU time of this
process (the sender thread's work included).

    python benchmarks/bench_sink_burst.py [--n 20000] [--linger 5 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NamedTuple

from streamlstm.kafka.broker import LocalBroker
from streamlstm.kafka.config import KafkaConfig, SinksConfig
from streamlstm.kafka.sink import AlertSink


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Any]


def burst(bootstrap: str, linger_ms: int, n: int, topic: str) -> dict[str, float]:
    kafka = KafkaConfig(bootstrap_servers=(bootstrap,), extra={"linger_ms": linger_ms})
    sink = AlertSink(
        kafka, SinksConfig(alerts_topic=None, dead_letter_topic=topic, log_alerts=False), "b"
    )
    sink.connect()
    recs = [Rec("events", i % 4, i, b"sensor-%04d" % (i % 1000), b"\x00garbage" * 12, [])
            for i in range(n)]  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    for r in recs:
        sink.dead_letter(r, "not_json", "bad")
    t_sent = time.perf_counter()
    assert sink.flush(60.0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sink.close()
    return {"wall_s": wall, "send_s": t_sent - t0, "cpu_s": cpu, "per_s": n / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--linger", type=int, nargs="+", default=[5, 0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    best: dict[int, dict[str, float]] = {}
    with LocalBroker() as broker:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})  # as bench_e2e: the broker keeps the other core
        for r in range(args.repeat):
            for lg in args.linger:
                topic = f"dlq-{lg}-{r}"
                broker.create_topics({topic: 1})
                res = burst(broker.bootstrap, lg, args.n, topic)
                print(f"linger_ms={lg} round {r}: {res}", flush=True)
                if lg not in best or res["wall_s"] < best[lg]["wall_s"]:
                    best[lg] = res
    print(json.dumps({"n": args.n, "best": best, "load_average": os.getloadavg()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
