"""Offline scoring throughput: the event-file reader alone, then ``streamlstm score`` end to end.

    python benchmarks/bench_score.py                  # 200k events, 50 streams, 4 features
    python benchmarks/bench_score.py --n 1000000 --format jsonl --gzip

Writes a synthetic file (ISO times, like most exported sensor data) to a
temporary folder, then reports events/s of :class:`streamlstm.io.tabular.EventReader`
and of ``streamlstm score`` (read, Detector, write), as wall and CPU time of
this process (CPU time is the steadier number on a shared machine). The first
``score`` run of a session also pays the kernels' compile (cached on disk
afterwards); ``--repeat`` reports the best run.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from streamlstm.cli import main as cli_main
from streamlstm.io.tabular import EventReader
from streamlstm.model import Model

FEATURES = ("temp", "pressure", "flow", "vibration")


def write_events(path: Path, n: int, streams: int, fmt: str, compress: bool, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal([60.0, 4.0, 120.0, 0.5], [5.0, 0.3, 10.0, 0.1], size=(n, 4)).tolist()
    stamps = (np.datetime64("2024-05-01T00:00:00") + np.arange(n) // streams).astype(str).tolist()
    keys = [f"sensor-{i % streams:04d}" for i in range(n)]
    if fmt == "csv":
        head = "machine,ts," + ",".join(FEATURES) + "\n"
        body = "".join(
            f"{k},{t.replace('T', ' ')},{a:.6g},{b:.6g},{c:.6g},{d:.6g}\n"
            for k, t, (a, b, c, d) in zip(keys, stamps, x, strict=True)
        )
        data = (head + body).encode()
    else:
        data = b"".join(
            orjson.dumps({"machine": k, "ts": t, **dict(zip(FEATURES, row, strict=True))}) + b"\n"
            for k, t, row in zip(keys, stamps, x, strict=True)
        )
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)


def timed(fn: object, repeat: int) -> tuple[float, float]:
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="events")
    ap.add_argument("--streams", type=int, default=50, help="stream keys")
    ap.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    ap.add_argument("--gzip", action="store_true", help="gzip the input")
    ap.add_argument("--hidden", type=int, default=32, help="LSTM hidden units")
    ap.add_argument("--repeat", type=int, default=2, help="runs; the best is reported")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        d = Path(tmp)
        src = d / f"events.{args.format}{'.gz' if args.gzip else ''}"
        write_events(src, args.n, args.streams, args.format, args.gzip)
        model = Model.random(FEATURES, hidden=args.hidden, seed=0)
        model.save(d / "m.npz")

        def read() -> None:
            reader = EventReader(src, FEATURES, key="machine", time="ts")
            assert sum(len(ev) for ev in reader) == args.n

        def score() -> None:
            argv = ["score", "--model", str(d / "m.npz"), "--input", str(src), "--key",
                    "machine", "--time", "ts", "--out", str(d / "scores.csv"), "-q"]  # fmt: skip
            assert cli_main(argv) == 0

        mb = src.stat().st_size / 1e6
        print(f"{args.n} events, {args.streams} streams, {src.name} ({mb:.1f} MB), "
              f"LSTM hidden {args.hidden}")  # fmt: skip
        for name, fn in (("read", read), ("score", score)):
            wall, cpu = timed(fn, args.repeat)
            print(
                f"  {name:<6} {args.n / wall:>10,.0f} events/s wall  "
                f"{args.n / cpu:>10,.0f} events/s cpu  ({1e6 * cpu / args.n:.2f} us/event cpu)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
