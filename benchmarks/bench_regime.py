"""Where the detector kernel's time goes: the regime scorer alone, hot and cold.

    NUMBA_CACHE_DIR=/tmp/nc .venv/bin/python benchmarks/bench_regime.py [--features 8]

Single thread, CPU clock, best of ``--repeats``. Prints ns per call of
``regime._regime_step`` (score + learn of one event, all ``F`` features) in a
compiled loop:

- ``hot``: one slot over and over (its state rows stay in L1): the arithmetic;
- ``cold``: a random slot of a ``--streams`` table per call (state rows from
  memory, as the kernel sees them with 100k streams, without its prefetch);
- ``cold+prefetch``: the same with each call's rows prefetched 8 calls ahead,
  as ``detect._detect_batch`` does.

Streams are warmed past the scorer's baseline (``BASELINE_EVENTS``) with Gaussian
noise first, so the numbers are those of a steady-state stream. With
``PYTHONPATH=/path/to/other/copy`` it times another copy of the package, for
before/after ratios in the same minutes (``streamlstm bench --scorer regime`` vs
``--scorer forecast`` gives the scorer's share of the whole kernel).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from streamlstm.kernels import layout as KL  # noqa: E402
from streamlstm.kernels import regime as R  # noqa: E402
from streamlstm.kernels.cells import _prefetch_row  # noqa: E402
from streamlstm.kernels.layout import F_LAST_T  # noqa: E402

AHEAD = 8


if R._regime_step.py_func.__code__.co_argcount == 14:  # with the event time (time of day)

    @njit(cache=False)
    def _step(s, x, fc, n_events, scored, sstat, fstat, istat, dist, contrib, why):
        # one event a minute (a new hour every 60 events), the time kept as the detector does
        out = R._regime_step(s, x, fc, n_events, 60.0 * n_events, scored, sstat, fstat,
                             istat, dist, contrib, why, 0, 1)  # fmt: skip
        fstat[s, F_LAST_T] = 60.0 * n_events
        return out

elif R._regime_step.py_func.__code__.co_argcount == 13:  # with the per-feature view (why)

    @njit(cache=False)
    def _step(s, x, fc, n_events, scored, sstat, fstat, istat, dist, contrib, why):
        return R._regime_step(s, x, fc, n_events, scored, sstat, fstat, istat, dist, contrib,
                              why, 0, 1)  # fmt: skip

else:  # a copy of the package from before the why output (PYTHONPATH)

    @njit(cache=False)
    def _step(s, x, fc, n_events, scored, sstat, fstat, istat, dist, contrib, why):
        return R._regime_step(s, x, fc, n_events, scored, sstat, fstat, istat, dist, contrib,
                              0, 1)  # fmt: skip


@njit(cache=False)
def _loop(slots, xs, fcs, n_events, scored, sstat, fstat, istat, dist, contrib, why, prefetch):
    acc = 0.0
    n = slots.shape[0]
    for i in range(n):
        if prefetch and i + AHEAD < n:
            p = slots[i + AHEAD]
            _prefetch_row(sstat, p)
            _prefetch_row(fstat, p)
            _prefetch_row(istat, p)
        s = slots[i]
        j = i % xs.shape[0]
        # each call is the next event of its stream (the scorer's periodic work, the
        # relation's solve every REL_REFRESH events, falls on its share of the calls)
        sc, hd = _step(s, xs[j], fcs[j], n_events + i, scored, sstat, fstat, istat, dist, contrib,
                       why)  # fmt: skip
        acc += sc
    return acc


def warmed_table(nf: int, ns: int, warm: int, rng: np.random.Generator) -> tuple:
    """The scorer's arrays for ``ns`` streams of ``nf`` features, each past ``warm``
    events of Gaussian noise (64 streams warmed, their rows copied over the rest), and
    the scratch rows, the events and the forecasts the timed loops replay:
    ``(sstat, fstat, istat, dist, contrib, why, scored, xs, fcs)``."""
    # (a copy of the package from before the relation's regression: N_SSTAT rows only)
    rows = KL.n_sstat_rows(nf) if hasattr(KL, "n_sstat_rows") else KL.N_SSTAT
    sstat = np.zeros((ns, rows, nf), np.float32)
    fstat = np.zeros((ns, KL.N_FSTAT), np.float64)
    istat = np.zeros((ns, KL.N_ISTAT), np.int64)
    dist = np.zeros((getattr(R, "N_DIST", 11), nf), np.float64)
    contrib = np.zeros((1, nf), np.float32)
    why = np.zeros((1, nf), np.float32)
    scored = np.ones(nf, np.bool_)
    xs = rng.standard_normal((4096, nf))
    fcs = xs * 0.0 + rng.standard_normal((4096, nf)) * 0.1  # a forecast near 0
    base = 64
    for k in range(warm):
        _loop(np.arange(base, dtype=np.int64), xs[k : k + 1], fcs[k : k + 1], k,
              scored, sstat, fstat, istat, dist, contrib, why, False)  # fmt: skip
    for a in (sstat, fstat, istat):
        a[base:] = np.resize(a[:base], a[base:].shape)
    return sstat, fstat, istat, dist, contrib, why, scored, xs, fcs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--warm", type=int, default=-1,
        help="events each stream has seen before timing (default: past the baseline; "
        "`streamlstm bench` streams have seen a few: try 2)",
    )  # fmt: skip
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    nf, ns = args.features, args.streams
    warm = R.BASELINE_EVENTS + 64 if args.warm < 0 else args.warm
    t = warmed_table(nf, ns, warm, rng)
    sstat, fstat, istat, dist, contrib, why, scored, xs, fcs = t
    n_ev = warm
    rows = {}
    for label, prefetch in (("hot", False), ("cold", False), ("cold+prefetch", True)):
        best = float("inf")
        for _ in range(args.repeats):
            if label == "hot":
                slots = np.zeros(args.calls, np.int64)
            else:
                slots = rng.integers(0, ns, args.calls).astype(np.int64)
            t0 = time.thread_time()
            _loop(slots, xs, fcs, n_ev, scored, sstat, fstat, istat, dist, contrib, why, prefetch)
            best = min(best, (time.thread_time() - t0) / args.calls)
        rows[label] = best * 1e9
    print(f"package: {R.__file__}")
    print(f"F={nf}: " + ", ".join(f"{k} {v:.0f} ns" for k, v in rows.items()))
    print(f"per feature: hot {rows['hot'] / nf:.1f} ns")
    tiny = np.abs(sstat[0]) < np.finfo(np.float32).tiny
    print(f"hot slot: {int((tiny & (sstat[0] != 0)).sum())} subnormal state values")


if __name__ == "__main__":
    main()
