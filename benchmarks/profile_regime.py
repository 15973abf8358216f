"""Where the regime scorer's time goes, region by region (a cycle-counter profile).

    NUMBA_CACHE_DIR=/tmp/nc .venv/bin/python benchmarks/profile_regime.py [--features 8]

perf cannot name Numba's compiled code (no symbol map), and the scorer is one function
with its helpers inlined, so this instruments a copy instead: the package is copied to
a temporary directory, ``llvm.readcyclecounter`` marks are put between the scorer's
parts (``REGIONS``: each is anchored on a line of ``regime.py``, and a line that moved
stops the script with its name), and ``bench_regime.py``'s hot and prefetched loops
run on that copy. Each mark adds the counter ticks since the previous mark to its
region's row of the scorer's ``dist`` scratch (widened for this), so a region's figure
is its ticks per call (all features of one event), less the cost of a mark itself
(measured by a region of no code, ``(empty)``). The marks slow the scorer by ~1.7x and
keep the compiler from moving code across them: the shares, not the sum, are the
finding. The counter ticks at the CPU's nominal rate (the script prints ns per tick,
from the same run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_STEP = 32  # rows of dist where _regime_step's regions count (N_DIST is 22)
BASE_LEARN = 64  # ... and _regime_learn's
N_ROWS = 96

# (name, function, anchor, where): a mark before or after the anchor's one occurrence
# closes the region named (the code since the previous mark of the same function).
REGIONS: list[tuple[str, str, str, str]] = [
    (
        "step: set-up and the channels' z",
        "step",
        "    # -- distances, from the state before this event",
        "before",
    ),
    (
        "step: the feature's scratch rows",
        "step",
        "        x = xv[f]\n        prev = sstat[s, SS_XPREV, f]\n        if not scored[f]",
        "before",
    ),
    (
        "(empty)",
        "step",
        "        x = xv[f]\n        prev = sstat[s, SS_XPREV, f]\n        if not scored[f]",
        "before",
    ),
    (
        "step: residual, modes, energy, level, spread",
        "step",
        "        # the rhythm: the residuals' lag-1",
        "before",
    ),
    (
        "step: rhythm",
        "step",
        "        # the energy's accumulated evidence: from the 16th value",
        "before",
    ),
    (
        "step: accumulated evidence, relation, regression",
        "step",
        "        if not warm:\n            # The views judge",
        "before",
    ),
    (
        "step: the views' distances",
        "step",
        "        # What holds: more energy or spread only",
        "before",
    ),
    (
        "step: hold, naming, rest",
        "step",
        "        # A jump onto one of the stream's modes is no spike, unless",
        "before",
    ),
    (
        "step: a jump onto a mode, time-of-day memory",
        "step",
        "        k_rc = _recurrence(sstat, s, f, i_rc, d_mem",
        "before",
    ),
    ("step: recurrence memory", "step", "        known = max(known, k_rc)\n", "before"),
    ("step: the feature's outputs", "step", "        h_all = max(h_all, h)\n", "after"),
    (
        "step: score and episode",
        "step",
        "    for f in range(n_feat):\n        contrib[e, f] = np.float32(dist[9, f] * dist[9, f])",
        "before",
    ),
    (
        "learn: warm-up level",
        "learn",
        "        prev = sstat[s, SS_XPREV, f]\n        repeat = _same(x, prev, sd)",
        "before",
    ),
    ("learn: rest value", "learn", "        if nf == 0.0:  # the feature's first value", "before"),
    (
        "learn: energy's log level",
        "learn",
        "            dm_ = x - sstat[s, SS_M, f]\n            if clip and dist[18, f] < BACK_RUN:",
        "before",
    ),
    (
        "learn: short level and spread",
        "learn",
        "            _learn_log_level(sstat, s, f, SS_LX, SS_LXV",
        "before",
    ),
    (
        "learn: spread's log level",
        "learn",
        "            i_ac = _ss_ac(n_feat)\n            n_ac = sstat",
        "before",
    ),
    (
        "learn: rhythm's band",
        "learn",
        "            e_n = dist[8, f]\n            if not math.isnan(e_n):",
        "before",
    ),
    (
        "learn: relation and regression bands",
        "learn",
        "            if learn:\n                a_r = aw if wu else RESID_RATE",
        "before",
    ),
    (
        "learn: scale, baseline, level band",
        "learn",
        "                _learn_range(sstat, s, f, wu, fl, nf)\n",
        "before",
    ),
    ("learn: range", "learn", "                _learn_range(sstat, s, f, wu, fl, nf)\n", "after"),
    (
        "learn: runs, accumulated evidence's tail",
        "learn",
        "            _learn_modes(sstat, s, f, x, r, s_eff, n_feat)\n",
        "before",
    ),
    (
        "learn: modes",
        "learn",
        "            _learn_modes(sstat, s, f, x, r, s_eff, n_feat)\n",
        "after",
    ),
    (
        "learn: spike level, counts",
        "learn",
        "        sstat[s, SS_XPREV, f] = x\n        sstat[s, SS_N, f] = nf + 1.0\n",
        "after",
    ),
    (
        "learn: loop end",
        "learn",
        "    _learn_relation(s, scored, sstat, dist, n_events, quiet)\n",
        "before",
    ),
    (
        "learn: regression (covariance, solve)",
        "learn",
        "    _learn_relation(s, scored, sstat, dist, n_events, quiet)\n",
        "after",
    ),
]
# Regions that run once a call, not once a feature: their marks' cost is one mark's.
ONCE = {
    "step: set-up and the channels' z",
    "step: score and episode",
    "learn: loop end",
    "learn: regression (covariance, solve)",
}
STARTS = {
    "step": "    n_feat = xv.shape[0]\n"
    "    i_w = N_SSTAT + n_feat  # rows of the relation's regression weights\n",
    "learn": "    a_b = 1.0 / BASE_TAU\n",
}
HEADER = """
from llvmlite import ir as _ir
from numba import types as _types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic as _intrinsic


@_intrinsic
def _rdtsc(typingctx):
    def codegen(context, builder, sig, args):
        fnty = _ir.FunctionType(_ir.IntType(64), [])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return _types.int64(), codegen


"""


def region_rows() -> list[int]:
    """The row of ``dist`` each of ``REGIONS`` counts in: its function's base, in order."""
    k = {"step": BASE_STEP, "learn": BASE_LEARN}
    out = []
    for _, fn, _, _ in REGIONS:
        out.append(k[fn])
        k[fn] += 1
    return out


def instrument(src: str) -> str:
    """``regime.py``'s text with the marks put in (SystemExit naming a moved anchor)."""

    def once(text: str, anchor: str, name: str) -> None:
        if text.count(anchor) != 1:
            raise SystemExit(f"profile_regime: the anchor of {name!r} is not once in regime.py")

    out = src
    once(out, "BASELINE_EVENTS = 256", "the header")
    out = out.replace("BASELINE_EVENTS = 256", HEADER + "BASELINE_EVENTS = 256", 1)
    once(out, "N_DIST = 22 ", "N_DIST")
    out = out.replace("N_DIST = 22 ", f"N_DIST = {N_ROWS} ", 1)
    for fn, anchor in STARTS.items():
        once(out, anchor, fn)
        out = out.replace(anchor, anchor + f"    _t_{fn} = _rdtsc()\n", 1)
    for (name, fn, anchor, where), row in zip(REGIONS, region_rows(), strict=True):
        once(out, anchor, name)
        lines = anchor.rstrip("\n").split("\n")
        line = lines[0] if where == "before" else lines[-1]
        ind = line[: len(line) - len(line.lstrip(" "))]
        mark = f"{ind}_now = _rdtsc()\n{ind}dist[{row}, 0] += _now - _t_{fn}\n{ind}_t_{fn} = _now\n"
        out = out.replace(anchor, mark + anchor if where == "before" else anchor + mark, 1)
    return out


DRIVER = r"""
import runpy
import time
import numpy as np
g = runpy.run_path({bench!r}, run_name="profiled")
from streamlstm.kernels import regime as R
assert R.N_DIST == {n_rows}, R.__file__
rng = np.random.default_rng(0)
ns = {streams}
warm = R.BASELINE_EVENTS + 64
t = g["warmed_table"]({features}, ns, warm, rng)
sstat, fstat, istat, dist, contrib, why, scored, xs, fcs = t
calls = {calls}
for label, prefetch in (("hot", False), ("prefetched", True)):
    slots = np.zeros(calls, np.int64) if label == "hot" else rng.integers(0, ns, calls)
    g["_loop"](slots[:1000], xs, fcs, warm, scored, sstat, fstat, istat, dist, contrib, why,
               prefetch)
    dist[:] = 0.0
    t0 = time.perf_counter()
    g["_loop"](slots, xs, fcs, warm, scored, sstat, fstat, istat, dist, contrib, why, prefetch)
    wall = time.perf_counter() - t0
    rows = dist[:, 0] / calls
    print(label, wall / calls * 1e9, " ".join(repr(float(v)) for v in rows))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-regime-") as tmp:
        pkg = Path(tmp) / "streamlstm"
        shutil.copytree(ROOT / "streamlstm", pkg, ignore=shutil.ignore_patterns("__pycache__"))
        regime = pkg / "kernels" / "regime.py"
        regime.write_text(instrument(regime.read_text()))
        driver = DRIVER.format(
            bench=str(ROOT / "benchmarks" / "bench_regime.py"),
            features=args.features, streams=args.streams, calls=args.calls, n_rows=N_ROWS,
        )  # fmt: skip
        env = {**os.environ, "PYTHONPATH": tmp, "NUMBA_NUM_THREADS": "1"}
        env.setdefault("NUMBA_CACHE_DIR", str(Path(tmp) / "numba"))
        out = subprocess.run(
            [sys.executable, "-c", driver],
            env=env, cwd=tmp, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
    results = {}
    for line in out.stdout.splitlines():
        if not line.startswith(("hot ", "prefetched ")):
            continue
        label, ns, *vals = line.split()
        results[label] = (float(ns), [float(v) for v in vals])
    names = [r[0] for r in REGIONS]
    index = region_rows()
    empty = index[names.index("(empty)")]
    print(f"regime scorer, {args.features} features, ticks of the cycle counter per call (one")
    print("event, all features), less one mark's own cost (the (empty) region's):\n")
    print("| region | hot | share | prefetched, random slots | share |")
    print("|---|---:|---:|---:|---:|")
    net = {}
    for label, (_, vals) in results.items():
        over = vals[empty]  # F marks: one a feature
        net[label] = [
            max(vals[i] - (over / args.features if name in ONCE else over), 0.0)
            for name, i in zip(names, index, strict=True)
        ]
    tot = {label: sum(v) for label, v in net.items()}
    for j, name in enumerate(names):
        if name == "(empty)":
            continue
        h, p = net["hot"][j], net["prefetched"][j]
        print(f"| {name} | {h:,.0f} | {100 * h / tot['hot']:.0f}% | {p:,.0f} | "
              f"{100 * p / tot['prefetched']:.0f}% |")  # fmt: skip
    print(f"| **all** | {tot['hot']:,.0f} | | {tot['prefetched']:,.0f} | |")
    for label, (ns, vals) in results.items():
        ticks = sum(vals[i] for i in index)
        print(f"\n{label}: {ns:,.0f} ns a call with the marks, {ns / ticks:.3f} ns a tick")


if __name__ == "__main__":
    main()
