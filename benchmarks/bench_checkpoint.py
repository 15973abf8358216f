"""Checkpoint cost, full vs incremental, with many live streams of which few changed.

    python benchmarks/bench_checkpoint.py                       # 1M streams, 1% changed
    python benchmarks/bench_checkpoint.py --streams 100000 --changed 0.05 --store none

Fills a detector (hidden 64, 4 features, like RESULTS-e2e.md's memory table) with
``--streams`` live streams spread over 4 partitions, then processes one batch
touching ``--changed`` of them, and checkpoints every partition twice in the
same run: a full generation (every stream), and a delta generation (the changed
streams only, :mod:`streamlstm.service.incremental`), each written to the
changelog topic of a real local broker (``--store kafka``, the store that
supports chains; acknowledged writes) or only serialised (``--store none``).
Reports bytes and seconds of each and the ratio full / incremental; also the
time to restore one partition from its chain (full + delta, merged).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model import Model
from streamlstm.service.incremental import DeltaTracker
from streamlstm.state import snapshot_to_bytes

FEATURES = ("temp", "pressure", "flow", "vibration")
PARTITIONS = 4
BATCH = 100_000


def fill(det: Detector, n: int, rng: np.random.Generator) -> None:
    for lo in range(0, n, BATCH):
        keys = [f"s{i:08d}" for i in range(lo, min(n, lo + BATCH))]
        for p in range(PARTITIONS):
            part = keys[p::PARTITIONS]
            det.process_many(part, np.full(len(part), 1.0), rng.normal(size=(len(part), 4)),
                             group=p)  # fmt: skip


def checkpoint(det: Detector, tracker: DeltaTracker, store: object | None, offset: int) -> dict:
    t0 = time.perf_counter()
    size = 0
    kinds = set()
    for p in range(PARTITIONS):
        snap, kind = tracker.snapshot(p)
        kinds.add(kind["kind"])
        if store is None:
            size += len(snapshot_to_bytes(snap))
        else:
            size += store.write("bench", p, offset, snap, kind).size  # type: ignore[attr-defined]
        tracker.written(p)
    return {"kind": "/".join(sorted(kinds)), "seconds": time.perf_counter() - t0, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1_000_000, help="live streams")
    ap.add_argument("--changed", type=float, default=0.01, help="fraction changed")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size")
    ap.add_argument("--store", choices=("kafka", "none"), default="kafka",
                    help="write to a local broker's changelog, or serialise only")  # fmt: skip
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    model = Model.random(FEATURES, hidden=args.hidden, seed=1)
    det = Detector(model, DetectorConfig(max_streams=args.streams))
    t0 = time.perf_counter()
    fill(det, args.streams, rng)
    print(f"filled {len(det.table)} streams in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    broker = store = None
    if args.store == "kafka":
        from streamlstm.kafka.broker import LocalBroker
        from streamlstm.kafka.config import KafkaConfig
        from streamlstm.service.changelog_store import KafkaCheckpointStore

        broker = LocalBroker().start()
        broker.create_topics({"bench": PARTITIONS})
        kafka = KafkaConfig(bootstrap_servers=(broker.bootstrap,), group_id="bench")
        store = KafkaCheckpointStore(kafka, "bench", f"bench-{uuid.uuid4().hex[:6]}-state",
                                     full_every=10, source_topics=("bench",))  # fmt: skip
    try:
        tracker = DeltaTracker(det.table, full_every=10)
        full = checkpoint(det, tracker, store, 1)
        n_changed = int(args.streams * args.changed)
        idx = rng.choice(args.streams, n_changed, replace=False)
        for p in range(PARTITIONS):
            keys = [f"s{i:08d}" for i in idx if i % PARTITIONS == p]
            det.process_many(keys, np.full(len(keys), 2.0), rng.normal(size=(len(keys), 4)),
                             group=p)  # fmt: skip
        delta = checkpoint(det, tracker, store, 2)
        restore_s = None
        if store is not None:
            t0 = time.perf_counter()
            fresh = KafkaCheckpointStore(kafka, "bench", store.topic, full_every=10)
            ck = fresh.read("bench", 0, check_committed=False)
            restore_s = time.perf_counter() - t0
            assert ck is not None and ck.n_streams == args.streams // PARTITIONS
            fresh.close()
    finally:
        if store is not None:
            store.close()
        if broker is not None:
            broker.stop()
    out = {
        "streams": args.streams, "changed": n_changed, "hidden": args.hidden,
        "store": args.store, "full": full, "incremental": delta,
        "ratio_bytes": full["bytes"] / max(1, delta["bytes"]),
        "ratio_seconds": full["seconds"] / max(1e-9, delta["seconds"]),
        "restore_one_partition_chain_s": restore_s,
    }  # fmt: skip
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
