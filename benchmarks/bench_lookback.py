"""What the alerts read-back costs a restart: ``ledger.read_tail`` on the local broker.

    python benchmarks/bench_lookback.py               # 100k alert records, 1 partition
    python benchmarks/bench_lookback.py --n 20000

Writes ``--n`` alert records (the daemon's own JSON, 4 features, ~430 bytes) to a
fresh topic of a local tansu broker, then times the read-back a restart does:
bounded by count (``sinks.lookback_records``: 10k and all of them), by time (the
records of the last second only), and of an empty topic (every restart of a daemon
that has sent nothing pays it). The baseline is the empty read, measured in the
same run: the ratios are what the records themselves cost.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import orjson

from streamlstm.kafka.broker import LocalBroker
from streamlstm.kafka.config import KafkaConfig
from streamlstm.kafka.ledger import LookBack, alert_key, read_tail

RECORD = {
    "schema": 1, "id": "0123456789abcdef0123", "pipeline": "p", "stream": "sensor-0001",
    "kind": "opened", "topic": "ev", "partition": 0, "offset": 0, "opened_offset": 0,
    "score": 0.9, "threshold": 0.5, "event_time": 1.7e9,
    "event_time_iso": "2023-11-14T22:13:20Z",
    "features": {"temp": 1.0, "pressure": 2.0, "flow": 3.0, "vibration": 4.0},
    "forecast": {"temp": 1.0, "pressure": 2.0, "flow": 3.0, "vibration": 4.0},
    "top_features": [{"feature": "temp", "share": 0.5}],
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="alert records written")
    args = ap.parse_args(argv)
    from kafka import KafkaProducer  # type: ignore[import-untyped]

    extract = functools.partial(alert_key, pipeline="p")
    with LocalBroker() as broker:
        broker.create_topics({"alerts": 1, "empty": 1})
        kafka = KafkaConfig(bootstrap_servers=(broker.bootstrap,))
        prod = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        rec = dict(RECORD)
        for i in range(args.n):
            rec["offset"] = i
            prod.send("alerts", key=b"s", value=orjson.dumps(rec))
        prod.flush()
        prod.close()
        since_last_s = time.time() - 1.0

        def timed(topic: str, since: float | None, bounds: LookBack) -> tuple[float, int, bool]:
            t0 = time.perf_counter()
            tail = read_tail(kafka, topic, since, extract, bounds)
            return time.perf_counter() - t0, tail.records, tail.complete

        base, _, _ = timed("empty", None, LookBack())
        print(f"record bytes {len(orjson.dumps(rec))}, {args.n} records written")
        print(f"{'read-back':<28}{'records':>9}{'seconds':>9}{'x empty':>9}  complete")
        rows = [
            ("empty topic", "empty", None, LookBack()),
            ("last 10k (count bound)", "alerts", None, LookBack(max_records=10_000)),
            (f"all {args.n}", "alerts", None, LookBack(max_records=args.n)),
            ("last second (time bound)", "alerts", since_last_s, LookBack(skew_s=0.0)),
        ]
        for label, topic, since, bounds in rows:
            s, n, complete = timed(topic, since, bounds)
            print(f"{label:<28}{n:>9}{s:>9.2f}{s / base:>9.1f}  {complete}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
