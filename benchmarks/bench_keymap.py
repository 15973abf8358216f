"""Key -> slot share of ``process_many``: the detector at batch 1024 with 100k live streams.

    python benchmarks/bench_keymap.py                   # hidden 64, 1 layer, 100k streams
    /work/main/.venv/bin/python benchmarks/bench_keymap.py   # the same on another checkout

Times, on the same micro-batches of distinct random streams (as ``streamlstm
bench`` draws them), ``Detector.process_many`` and ``StreamTable.slots_for``
alone right after it (so the key map is as cold as it is inside
``process_many``, behind state rows that fill the caches). Best of
``--repeats`` in thread CPU time. Uses public APIs only, so the same file
measures any checkout: run it with each checkout's interpreter in the same
minute and compare ratios.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model import Model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    n, b = args.streams, args.batch
    rng = np.random.default_rng(0)
    feats = [f"f{i}" for i in range(args.features)]
    model = Model.random(feats, hidden=args.hidden, layers=args.layers, seed=0)
    det = Detector(model, DetectorConfig(max_streams=n, warmup=10))
    keys = [f"stream-{i:07d}" for i in range(n)]
    for s in range(0, n, 8192):
        ks = keys[s : s + 8192]
        det.process_many(ks, np.zeros(len(ks)), rng.standard_normal((len(ks), len(feats))))
    batches = [
        ([keys[j] for j in rng.permutation(n)[:b]], rng.standard_normal((b, len(feats))))
        for _ in range(args.batches)
    ]
    clock = 1.0
    best_pm = best_keys = float("inf")
    for _ in range(args.repeats):
        clock += 1.0
        times = np.full(b, clock)
        t0 = time.thread_time()
        for k, x in batches:
            det.process_many(k, times, x)
        best_pm = min(best_pm, (time.thread_time() - t0) / (len(batches) * b))
        t0 = time.thread_time()
        for k, _ in batches:
            det.table.slots_for(k)
        best_keys = min(best_keys, (time.thread_time() - t0) / (len(batches) * b))
    print(
        f"streams {n:,} batch {b} hidden {args.hidden} layers {args.layers}: "
        f"process_many {best_pm * 1e9:,.0f} ns/event, key -> slot {best_keys * 1e9:,.0f} ns/key "
        f"({best_keys / best_pm:.0%} of process_many)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
