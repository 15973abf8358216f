"""Guard for mechanical speed-ups of the detector kernel: bit-identical to a reference.

    .venv/bin/python benchmarks/check_regime_exact.py --ref /tmp/h11k-ref [--quick]

``--ref`` is a folder holding a copy of the ``streamlstm`` package to compare with
(e.g. ``mkdir -p /tmp/ref && git archive main streamlstm | tar -x -C /tmp/ref``).
Both versions replay the same seeded inputs through ``Detector.process_many``, each in
its own interpreter (``PYTHONPATH`` picks the package; separate ``NUMBA_CACHE_DIR``
folders, so neither serves the other's machine code), and every output must be equal:
each ``_detect_batch`` call's whole ``out_val`` (score, forecast, standard deviations,
raw forecast, hold, per-feature contributions) and ``out_code`` (outcome, alert,
transition) and the opening refs, the ``Transition`` records, and the final state table
arrays. Equal means ``np.array_equal(..., equal_nan=True)`` and, stricter, the same
bytes (a -0.0 for a 0.0 or another NaN counts as a difference).

Inputs (all seeded): the synthetic fleet (``streamlstm.examples.synth``) with a random
LSTM and with the last-value forecaster; noise with spikes, level shifts, flat
stretches, a rest value with bursts, slow trends and daily swings, NaN gaps, an Inf and
out-of-order times, at 1 and 8 features (two of them context inputs), streams
interleaved in random micro-batch sizes (1 to 1000); and one run with per-stream
normalisation, gap decay and gap resets. Exit status 0 when everything is equal.

A reference from before ff8c79b has no per-feature view block (``why``) in ``out_val``:
its calls differ in size from this package's, so compare packages of one format.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent


# -- inputs ---------------------------------------------------------------------------------


def _stream_signal(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    """One channel of ``n`` steps; ``kind`` picks the shape of its normal and its faults."""
    t = np.arange(n, dtype=np.float64)
    base = rng.normal(0.0, 1.0, n)
    if kind == 0:  # white noise with spikes
        x = base
    elif kind == 1:  # random walk (a trend the level view must absorb)
        x = np.cumsum(base) * 0.1
    elif kind == 2:  # daily swing plus noise
        x = 3.0 * np.sin(2 * np.pi * t / 500.0) + 0.3 * base
    elif kind == 3:  # rest value (idle counter at 0) with bursts
        x = np.where(rng.random(n) < 0.15, np.abs(base) * 5.0 + 1.0, 0.0)
    elif kind == 4:  # quantised, often repeating values
        x = np.round(base * 2.0) / 2.0
    else:  # heavy-tailed
        x = rng.standard_t(2.0, n)
    # faults: spikes, level shifts, flat stretches, a permanent shift (held > MAX_HOLD)
    for _ in range(n // 400):
        x[rng.integers(0, n)] += rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 40.0)
    for _ in range(n // 1500):
        a = int(rng.integers(300, n - 100))
        x[a : a + int(rng.integers(20, 300))] += rng.uniform(-8.0, 8.0)
    for _ in range(n // 1500):
        a = int(rng.integers(300, n - 100))
        x[a : a + int(rng.integers(3, 200))] = x[a]
    if rng.random() < 0.3:
        x[n // 2 :] += rng.uniform(4.0, 10.0)
    if rng.random() < 0.3:  # a fast oscillation the forecast may follow
        a = int(rng.integers(300, n - 200))
        x[a : a + 150] += 4.0 * np.sin(np.arange(150) * 2.5)
    return x


def _interleave(
    rng: np.random.Generator, values: np.ndarray, period: float, bad: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(S, T, F) values -> events in time order, streams shuffled within each step."""
    n_streams, n_steps, _ = values.shape
    sid = np.argsort(rng.random((n_steps, n_streams)), axis=1).reshape(-1)
    tid = np.repeat(np.arange(n_steps), n_streams)
    times = tid * period + sid * 1e-3
    x = values[sid, tid].copy()
    if bad:
        n = x.shape[0]
        x[rng.random(x.shape) < 0.02] = np.nan  # single missing values (imputed)
        for _ in range(n // 2000):  # NaN gaps over whole events of one stream
            s = int(rng.integers(0, n_streams))
            a = int(rng.integers(0, n_steps - 50))
            rows = (sid == s) & (tid >= a) & (tid < a + int(rng.integers(1, 40)))
            x[rows] = np.nan
        x[rng.integers(0, n, 3)] = np.inf
        x[rng.integers(0, n, 2), 0] = 1e9  # out of range
        old = rng.integers(n_streams, n, 5)
        times[old] -= 5 * period  # older than the stream's last event
    return [f"s{i:03d}" for i in sid], times, x


def _batches(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    out = []
    i = 0
    while i < n:
        size = int(rng.choice([1, 3, 7, 64, 256, 1000]))
        out.append((i, min(n, i + size)))
        i += size
    return out


def _cases(quick: bool) -> list[dict[str, Any]]:
    steps = 3000 if quick else 9000
    return [
        {"name": "synth-lstm", "input": "synth", "model": "lstm", "steps": steps},
        {"name": "synth-lastvalue", "input": "synth", "model": "last", "steps": steps},
        {"name": "noise-1f", "input": "noise", "n_feat": 1, "streams": 12, "steps": steps},
        {"name": "noise-8f", "input": "noise", "n_feat": 8, "streams": 8, "steps": steps},
        {
            "name": "noise-8f-norm-gaps",
            "input": "noise",
            "n_feat": 8,
            "streams": 6,
            "steps": steps // 2,
            "config": {
                "stream_norm": "ewm",
                "norm_window": 64,
                "decay_tau_s": 600.0,
                "reset_gap_s": 3000.0,
                "min_run": 2,
                "cooldown_s": 120.0,
            },
            "gaps": True,
        },
    ]


def _make_input(case: dict[str, Any], seed: int) -> tuple[Any, list[str], np.ndarray, np.ndarray]:
    from streamlstm.model import Model
    from streamlstm.model.baselines import last_value_model

    rng = np.random.default_rng(seed)
    if case["input"] == "synth":
        from streamlstm.examples.synth import FleetSpec, generate_fleet

        spec = FleetSpec(n_streams=16, n_steps=case["steps"], seed=seed, anomaly_rate=3.0)
        keys_a, times, x32, _ = generate_fleet(spec).events(order="shuffled_within_time")
        x = x32.astype(np.float64)
        feats = list(spec.features)
        keys = list(keys_a)
    else:
        n_feat, n_streams, n_steps = case["n_feat"], case["streams"], case["steps"]
        vals = np.empty((n_streams, n_steps, n_feat))
        for s in range(n_streams):
            common = np.cumsum(rng.normal(0, 0.2, n_steps))  # couples the channels
            for f in range(n_feat):
                kind = int(rng.integers(0, 6))
                vals[s, :, f] = _stream_signal(rng, kind, n_steps) + (common if f % 2 else 0.0)
        keys, times, x = _interleave(rng, vals, 60.0, bad=True)
        if case.get("gaps"):  # silent stretches: decay, and one reset per stream
            for s in range(n_streams):
                at = np.array([k == f"s{s:03d}" for k in keys])
                times[at & (times > 0.4 * n_steps * 60.0)] += 900.0
                times[at & (times > 0.7 * n_steps * 60.0)] += 6000.0
        feats = [f"f{i}" for i in range(n_feat)]
    if case.get("model") == "last":
        model = last_value_model(feats, np.zeros(len(feats)), np.ones(len(feats)))
    else:
        model = Model.random(feats, hidden=16, seed=seed)
    if len(feats) == 8:
        model = model.with_context(["f5", "f7"])
    return model, keys, times, x


def worker(out_path: Path, quick: bool) -> None:
    """Run every case with whatever ``streamlstm`` is importable; pickle the outputs."""
    import streamlstm
    from streamlstm.detector import Detector, DetectorConfig
    from streamlstm.kernels import detect

    K: Any = detect
    real = K._detect_batch
    results: dict[str, Any] = {"package": streamlstm.__file__}
    for i, case in enumerate(_cases(quick)):
        seed = 20261206 + i
        model, keys, times, x = _make_input(case, seed)
        det = Detector(model, DetectorConfig(**case.get("config", {})))
        calls: list[tuple[np.ndarray, ...]] = []

        def record(*a: Any, calls: list[tuple[np.ndarray, ...]] = calls) -> Any:
            ev, out_code, out_val = a[0], a[13], a[14]
            # The detector allocates these with np.empty and the kernel leaves some
            # cells unwritten (opening refs without a transition, standard deviations
            # without per-stream normalisation): a fixed filler makes them comparable.
            ev[2] = -7
            out_code.fill(-7)
            out_val.fill(-7.0)
            n = real(*a)
            calls.append((ev.copy(), out_code.copy(), out_val.copy(), np.array(n)))
            return n

        transitions = []
        K._detect_batch = record
        try:
            brng = np.random.default_rng(seed + 1)
            for lo, hi in _batches(brng, len(keys)):
                res = det.process_many(keys[lo:hi], times[lo:hi], x[lo:hi])
                transitions += [repr(t) for t in res.transitions]
        finally:
            K._detect_batch = real
        state = {k: np.array(v, copy=True) for k, v in det.table.arrays.items()}
        results[case["name"]] = {
            "calls": calls,
            "transitions": transitions,
            "state": state,
            "n_events": len(keys),
        }
    out_path.write_bytes(pickle.dumps(results))


def _run_worker(pkg_root: Path, cache: str, out: Path, quick: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(pkg_root), "NUMBA_CACHE_DIR": cache}
    cmd = [sys.executable, str(HERE), "--worker", str(out)] + (["--quick"] if quick else [])
    # cwd outside the repo: the current folder would come first on sys.path
    subprocess.run(cmd, env=env, check=True, cwd=tempfile.gettempdir())
    return pickle.loads(out.read_bytes())


def _same(a: np.ndarray, b: np.ndarray) -> tuple[bool, bool]:
    """(equal, NaN-aware; same bytes)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False, False
    eq = bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return eq, eq and a.tobytes() == b.tobytes()


def compare(ref: dict[str, Any], new: dict[str, Any]) -> int:
    bad = 0
    for name, r in ref.items():
        if name == "package":
            continue
        n = new[name]
        problems: list[str] = []
        if len(r["calls"]) != len(n["calls"]):
            problems.append(f"{len(r['calls'])} kernel calls vs {len(n['calls'])}")
        else:
            for j, (rc, nc) in enumerate(zip(r["calls"], n["calls"], strict=True)):
                labels = ("ev", "out_code", "out_val", "n_trans")
                for label, a, b in zip(labels, rc, nc, strict=True):
                    eq, same_bytes = _same(a, b)
                    if not same_bytes:
                        where = np.flatnonzero(a.ravel() != b.ravel())[:5] if eq is False else []
                        kind = "values" if not eq else "bytes only"
                        problems.append(f"call {j} {label}: differ ({kind}) at {list(where)}")
                if len(problems) > 5:
                    break
        if r["transitions"] != n["transitions"]:
            problems.append(
                f"transitions differ ({len(r['transitions'])} vs {len(n['transitions'])})"
            )
        for k, a in r["state"].items():
            eq, same_bytes = _same(a, n["state"][k])
            if not same_bytes:
                problems.append(f"state {k}: differ ({'values' if not eq else 'bytes only'})")
        n_trans = len(r["transitions"])
        status = "PASS" if not problems else "FAIL"
        print(
            f"{status} {name}: {r['n_events']} events, {len(r['calls'])} calls, "
            f"{n_trans} transitions"
        )
        for p in problems[:8]:
            print("    " + p)
        bad += bool(problems)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", type=Path, help="folder holding the reference streamlstm package")
    ap.add_argument("--quick", action="store_true", help="shorter streams (3000 steps)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.quick)
        return 0
    if args.ref is None or not (args.ref / "streamlstm" / "__init__.py").exists():
        ap.error("--ref: a folder with a streamlstm package in it is required")
    cache = os.environ.get("NUMBA_CACHE_DIR", "/tmp/nc-check")
    with tempfile.TemporaryDirectory() as tmp:
        ref = _run_worker(args.ref, cache + "-ref", Path(tmp) / "ref.pkl", args.quick)
        new = _run_worker(REPO, cache, Path(tmp) / "new.pkl", args.quick)
    print(f"reference: {ref['package']}\nchecked:   {new['package']}")
    assert ref["package"] != new["package"], "both runs imported the same package"
    bad = compare(ref, new)
    print("ALL EQUAL" if not bad else f"{bad} case(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
