"""``streamlstm bench``: nanoseconds per event of the engine against baselines.

Single thread throughout (one core is what a daemon replica gets per
partition), F features, a table of ``--streams`` live streams, and events on
random streams (each micro-batch draws distinct streams; a fresh permutation
per pass, so state rows come from all over the table as in production).
For each hidden size, layer count and micro-batch size it measures:

- ``process_many``: :meth:`Detector.process_many`, the real path (string
  keys -> slots, normalisation, wave ordering, the kernel, result arrays);
- ``kernel``: the bare ``_detect_batch`` call on prepared arrays;
- ``torch 1-ev``: PyTorch ``nn.LSTMCell`` (``nn.GRUCell``) + ``nn.Linear``
  head, one event per call, state rows sliced out of and written back to
  per-stream tensors (independent of the micro-batch);
- ``torch batched``: the same modules on the whole micro-batch with index
  gather/scatter of per-stream state (``h[idx], c[idx] = cell(x, (h[idx], c[idx]))``);
- ``SGEMM limit``: FLOPs per event (``2 (I + H) G`` per layer + ``2 H F``
  for the head, ``G = 4H`` LSTM / ``3H`` GRU) divided by the FLOP/s numpy's
  single-thread SGEMM reaches in this run on the layer-0 product of the same
  shape, ``(batch, I + H) @ (I + H, G)`` (best of a stacked ``matmul``, which
  hides Python's per-call cost, and of repeated 2-D products).

Every number is the best of ``--repeats`` passes, timed by default with the
thread's CPU clock (``--clock cpu``: time the scheduler gives to other
processes on a shared machine is not counted; everything measured runs in the
calling thread); ratios are between numbers measured in the same run, which
is what stays meaningful on a shared machine.
PyTorch is optional (a test-only dependency): without it the torch columns
read "n/a".

Length: a benchmark that re-executes itself pinned to one thread, runs four engines on
identical events and writes the table; the table text is half of it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

NAME = "bench"
HELP = "measure ns per event of the engine vs PyTorch and the SGEMM limit (single thread)"

# Set before numpy / numba / torch load their thread pools; a pool started with
# more threads would make the "single thread" numbers depend on the machine's load.
THREAD_ENV = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_CHILD_FLAG = "STREAMLSTM_BENCH_CHILD"

# Events each stream has seen before the timed passes: past the regime scorer's baseline
# (BASELINE_EVENTS, 256), where every view is judged and learns, as in a daemon that has
# run for a while. New streams (1) take the scorer's cheaper warm-up paths.
WARM_EVENTS = 320
# Streams warmed event by event; their rows are then copied over the rest of the table.
WARM_STREAMS = 1024
QUICK = {"hidden": [64], "layers": [1], "batch": [1, 1024], "streams": 10_000, "repeats": 3}


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=_ints, default=[16, 32, 64, 128], help="hidden sizes")
    p.add_argument("--layers", type=_ints, default=[1, 2], help="layer counts")
    p.add_argument("--batch", type=_ints, default=[1, 64, 1024], help="micro-batch sizes")
    p.add_argument("--features", type=int, default=8, help="features per event")
    p.add_argument("--streams", type=int, default=100_000, help="live streams in the table")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm", help="cell type")
    p.add_argument("--scorer", choices=["regime", "forecast"], default="regime",
                   help="the detector's scorer (scoring.scorer)")  # fmt: skip
    p.add_argument("--inputs", choices=["levels", "changes"], default="levels",
                   help="what the cell reads (Model.delta, `train --inputs`): changes cost "
                   "a subtraction and a clip a feature, and the forecast adds the last "
                   "value")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="passes per measurement (best kept)")
    p.add_argument(
        "--events", type=int, default=16_384,
        help="events per pass for micro-batches > 1 (single events: 1/8 of it)",
    )  # fmt: skip
    p.add_argument(
        "--warm-events", type=int, default=WARM_EVENTS,
        help="events every stream has seen before timing (a running daemon's streams are "
        "past the scorer's warm-up; 1: streams new to the table)",
    )  # fmt: skip
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    p.add_argument(
        "--quick", action="store_true",
        help="small CI smoke run: hidden 64, 1 layer, batches 1 and 1024, 10k streams, 3 repeats",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of weights and events")
    p.add_argument(
        "--clock", choices=["cpu", "wall"], default="cpu",
        help="cpu: the thread's CPU time (robust on a shared machine); wall: elapsed time",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")


def _argv(args: argparse.Namespace) -> list[str]:
    out = [
        "--hidden", ",".join(map(str, args.hidden)),
        "--layers", ",".join(map(str, args.layers)),
        "--batch", ",".join(map(str, args.batch)),
        "--features", str(args.features), "--streams", str(args.streams),
        "--cell", args.cell, "--scorer", args.scorer, "--inputs", args.inputs,
        "--repeats", str(args.repeats),
        "--events", str(args.events), "--warm-events", str(args.warm_events),
        "--seed", str(args.seed), "--clock", args.clock,
    ]  # fmt: skip
    if args.no_torch:
        out.append("--no-torch")
    if args.quick:
        out.append("--quick")
    if args.out is not None:
        out += ["--out", str(args.out)]
    return out


def run(args: argparse.Namespace) -> int:
    if any(os.environ.get(k) != v for k, v in THREAD_ENV.items()) and not os.environ.get(
        _CHILD_FLAG
    ):
        # Thread pools are sized when numpy/numba load, which the CLI has already
        # done: run again in a fresh interpreter with the single-thread environment.
        env = {**os.environ, **THREAD_ENV, _CHILD_FLAG: "1"}
        cmd = [sys.executable, "-m", "streamlstm", "bench", *_argv(args)]
        return subprocess.call(cmd, env=env)
    return bench(args)


# -- measurement -------------------------------------------------------------------------


# Set by bench() from --clock: the thread's CPU time or wall time, in seconds.
_clock: Callable[[], float] = time.thread_time


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """Best time of ``repeats`` calls of ``fn`` (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = _clock()
        fn()
        best = min(best, _clock() - t0)
    return best


@dataclass
class Row:
    cell: str
    hidden: int
    layers: int
    batch: int
    process_many: float  # ns per event
    kernel: float
    torch_one: float | None
    torch_batched: float | None
    sgemm_limit: float
    sgemm_gflops: float
    bytes_per_stream: int


def _flops_per_event(cell: str, n_in: int, hid: int, layers: int, n_feat: int) -> int:
    g = (4 if cell == "lstm" else 3) * hid
    total = 0
    for layer in range(layers):
        total += 2 * ((n_in if layer == 0 else hid) + hid) * g
    return total + 2 * hid * n_feat


def _sgemm_gflops(batch: int, k: int, g: int, repeats: int) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, g), dtype=np.float32)
    stack = max(1, 8192 // batch)
    a3 = rng.standard_normal((stack, batch, k), dtype=np.float32)
    o3 = np.empty((stack, batch, g), np.float32)
    a2 = a3[0]
    o2 = o3[0]
    np.matmul(a3, w, out=o3)

    def loop2() -> None:
        for _ in range(stack):
            np.matmul(a2, w, out=o2)

    flops = 2.0 * stack * batch * k * g
    t = min(_best(lambda: np.matmul(a3, w, out=o3), repeats), _best(loop2, repeats))
    return flops / t / 1e9


class _Bench:
    """One (hidden, layers) configuration: a filled table and matching torch state."""

    def __init__(self, args: argparse.Namespace, hid: int, layers: int) -> None:
        import numpy as np

        from streamlstm.detector import Detector, DetectorConfig
        from streamlstm.model import Model

        self.args = args
        self.hid = hid
        self.layers = layers
        self.n_feat = args.features
        self.rng = np.random.default_rng(args.seed)
        feats = [f"f{i}" for i in range(self.n_feat)]
        self.model = Model.random(feats, hidden=hid, layers=layers, cell=args.cell, seed=args.seed)
        if args.inputs == "changes":
            self.model = replace(self.model, delta=True)
        self.det = Detector(
            self.model, DetectorConfig(max_streams=args.streams, warmup=10, scorer=args.scorer)
        )
        self.keys = [f"stream-{i:07d}" for i in range(args.streams)]
        self.clock = 0.0
        chunk = 8192
        for i in range(0, args.streams, chunk):
            ks = self.keys[i : i + chunk]
            self.det.process_many(
                ks, np.zeros(len(ks)), self.rng.standard_normal((len(ks), self.n_feat))
            )
        self._warm(max(1, args.warm_events))
        self.torch: Any = None
        if not args.no_torch:
            self._init_torch()

    def _warm(self, events: int) -> None:
        """Bring every stream to ``events`` seen events: the first ``WARM_STREAMS`` one
        event a second of Gaussian noise, their rows then copied over the others (the
        same state a stream of that history has; an event costs what it would)."""
        import numpy as np

        if events <= 1:
            return
        n_w = min(WARM_STREAMS, len(self.keys))
        ks = self.keys[:n_w]
        for _ in range(events - 1):
            self.clock += 1.0
            x = self.rng.standard_normal((n_w, self.n_feat))
            self.det.process_many(ks, np.full(n_w, self.clock), x)
        table = self.det.table
        slots = table._lookup(self.keys)  # every key is in the table
        src = np.resize(slots[:n_w], slots.shape[0] - n_w)
        for arr in (*table.arrays.values(), table.last_time):
            arr[slots[n_w:]] = arr[src]

    def _init_torch(self) -> None:
        try:
            import torch
        except ModuleNotFoundError:
            return
        torch.set_num_threads(1)
        m = self.model
        n = self.args.streams
        mk = torch.nn.LSTMCell if m.cell == "lstm" else torch.nn.GRUCell
        cells = []
        with torch.no_grad():
            for k in range(m.layers):
                cell = mk(m.input_size if k == 0 else m.hidden, m.hidden)
                cell.weight_ih.copy_(torch.from_numpy(m.weight_ih[k]))
                cell.weight_hh.copy_(torch.from_numpy(m.weight_hh[k]))
                cell.bias_ih.copy_(torch.from_numpy(m.bias_ih[k]))
                cell.bias_hh.copy_(torch.from_numpy(m.bias_hh[k]))
                cells.append(cell)
            head = torch.nn.Linear(m.hidden, m.n_features)
            head.weight.copy_(torch.from_numpy(m.head_weight))
            head.bias.copy_(torch.from_numpy(m.head_bias))
        self.torch = torch
        self.t_cells = cells
        self.t_head = head
        self.t_h = [torch.zeros(n, m.hidden) for _ in range(m.layers)]
        self.t_c = [torch.zeros(n, m.hidden) for _ in range(m.layers)] if m.cell == "lstm" else None

    def _passes(self, batch: int, n_events: int) -> list[tuple[list[int], Any]]:
        """Micro-batches of distinct random streams with their raw features."""
        perm = self.rng.permutation(self.args.streams)[: max(batch, n_events)]
        x = self.rng.standard_normal((perm.shape[0], self.n_feat))
        return [
            (perm[i : i + batch].tolist(), x[i : i + batch])
            for i in range(0, perm.shape[0] - batch + 1, batch)
        ]

    def process_many(self, batch: int, n_events: int) -> float:
        import numpy as np

        best = float("inf")
        for _ in range(self.args.repeats):
            batches = [([self.keys[i] for i in idx], x) for idx, x in self._passes(batch, n_events)]
            self.clock += 1.0
            times = np.full(batch, self.clock)
            t0 = _clock()
            for keys, x in batches:
                self.det.process_many(keys, times, x)
            t = _clock() - t0
            best = min(best, t / (len(batches) * batch))
        return best * 1e9

    def kernel(self, batch: int, n_events: int) -> float:
        """The bare kernel: the ``_detect_batch`` calls of ``process_many``, timed alone.

        Each call is timed inside ``process_many`` on the events it was made for: a
        replay of recorded calls (how it was timed before) applies each event a second
        time at the time it already had, which need not cost what a new event does.
        """
        import numpy as np

        from streamlstm.kernels import detect

        K: Any = detect  # the kernel attribute is swapped below, which mypy cannot follow
        real = K._detect_batch
        best = float("inf")
        for _ in range(self.args.repeats):
            self.clock += 1.0
            times = np.full(batch, self.clock)
            spent = [0.0, 0]

            def timed(*a: Any, spent: list[Any] = spent) -> Any:
                t0 = _clock()
                out = real(*a)
                spent[0] += _clock() - t0
                spent[1] += 1
                return out

            K._detect_batch = timed
            try:
                for idx, x in self._passes(batch, n_events):
                    self.det.process_many([self.keys[i] for i in idx], times, x)
            finally:
                K._detect_batch = real
            best = min(best, spent[0] / (spent[1] * batch))
        return best * 1e9

    def torch_one(self, n_events: int) -> float | None:
        if self.torch is None:
            return None
        torch = self.torch
        cells, head, hs, cs = self.t_cells, self.t_head, self.t_h, self.t_c
        best = float("inf")
        for _ in range(self.args.repeats):
            events = []
            for idx, x in self._passes(1, n_events):
                events.append((idx[0], torch.from_numpy(self.model.normalise(x))))
            t0 = _clock()
            with torch.inference_mode():
                for s, x in events:
                    inp = x
                    for k, cell in enumerate(cells):
                        if cs is not None:
                            h, c = cell(inp, (hs[k][s : s + 1], cs[k][s : s + 1]))
                            cs[k][s : s + 1] = c
                        else:
                            h = cell(inp, hs[k][s : s + 1])
                        hs[k][s : s + 1] = h
                        inp = h
                    head(inp)
            t = _clock() - t0
            best = min(best, t / len(events))
        return best * 1e9

    def torch_batched(self, batch: int, n_events: int) -> float | None:
        if self.torch is None:
            return None
        torch = self.torch
        cells, head, hs, cs = self.t_cells, self.t_head, self.t_h, self.t_c
        best = float("inf")
        for _ in range(self.args.repeats):
            batches = [
                (torch.tensor(idx, dtype=torch.int64), torch.from_numpy(self.model.normalise(x)))
                for idx, x in self._passes(batch, n_events)
            ]
            t0 = _clock()
            with torch.inference_mode():
                for idx, x in batches:
                    inp = x
                    for k, cell in enumerate(cells):
                        if cs is not None:
                            h, c = cell(inp, (hs[k][idx], cs[k][idx]))
                            cs[k][idx] = c
                        else:
                            h = cell(inp, hs[k][idx])
                        hs[k][idx] = h
                        inp = h
                    head(inp)
            t = _clock() - t0
            best = min(best, t / (len(batches) * batch))
        return best * 1e9


def bench(args: argparse.Namespace) -> int:
    global _clock
    _clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.quick:
        for name, val in QUICK.items():
            setattr(args, name, val)
    rows: list[Row] = []
    started = time.perf_counter()
    for hid in args.hidden:
        for layers in args.layers:
            b = _Bench(args, hid, layers)
            n_in = b.model.input_size
            flops = _flops_per_event(args.cell, n_in, hid, layers, args.features)
            g = b.model.gates
            one_events = max(64, args.events // 8)
            torch_one = b.torch_one(max(64, one_events // 2))
            for batch in args.batch:
                n_ev = one_events if batch == 1 else args.events
                gflops = _sgemm_gflops(batch, n_in + hid, g, args.repeats)
                row = Row(
                    cell=args.cell, hidden=hid, layers=layers, batch=batch,
                    process_many=b.process_many(batch, n_ev),
                    kernel=b.kernel(batch, n_ev),
                    torch_one=torch_one,
                    torch_batched=b.torch_batched(batch, n_ev),
                    sgemm_limit=flops / gflops,
                    sgemm_gflops=gflops,
                    bytes_per_stream=b.det.table.bytes_per_stream(),
                )  # fmt: skip
                rows.append(row)
                print(_row_line(row), file=sys.stderr, flush=True)
            del b
    text = render(rows, args, time.perf_counter() - started)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _row_line(r: Row) -> str:
    return (
        f"H={r.hidden} L={r.layers} batch={r.batch}: process_many {r.process_many:.0f} ns, "
        f"kernel {r.kernel:.0f} ns, torch 1-ev {_ns(r.torch_one)}, "
        f"torch batched {_ns(r.torch_batched)}, SGEMM limit {r.sgemm_limit:.0f} ns"
    )


def _ns(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def render(rows: Sequence[Row], args: argparse.Namespace, elapsed: float) -> str:
    import numba
    import numpy as np

    try:
        import torch

        torch_v = str(torch.__version__)
    except ModuleNotFoundError:
        torch_v = "not installed"
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    shown = _argv(argparse.Namespace(**{**vars(args), "out": None}))
    out = [
        "# streamlstm kernel benchmark",
        "",
        f"{now}, {platform.processor() or platform.machine()}, {_cpu_name()}; "
        f"numpy {np.__version__}, numba {numba.__version__}, torch {torch_v}; single thread; "
        f"{args.cell.upper()}, {args.features} features, {args.streams:,} live streams, "
        f"each past {args.warm_events} events (the scorer's steady state from 257), "
        f"random distinct streams per micro-batch; best of {args.repeats} "
        f"({'thread CPU time' if args.clock == 'cpu' else 'wall time'}); "
        f"run took {elapsed:.0f} s.",
        "",
        "Command: `" + " ".join(["streamlstm bench", *shown]) + "`"
        " (or `python benchmarks/bench_kernels.py` with the same options, which also"
        " writes benchmarks/results.md).",
        "",
        "ns per event (lower is better). `vs torch` = torch batched time / ours (higher is"
        " better); `/ limit` = ours / SGEMM limit (1.0 would be SGEMM speed).",
        "",
        "What each column holds: `kernel` is one `_detect_batch` call per micro-batch and"
        " includes normalisation, wave ordering, validation, scoring, the alert machine and"
        " the state rows of random streams (mostly cache misses at this table size), not"
        " only the cell; at batch 1 ~0.8 us of it is Python calling a Numba function with"
        " 13 array arguments. `process_many` adds the key -> slot lookup (the compiled key map over"
        " all live streams) and the result arrays. The torch columns run the cell and head"
        " only, on prepared tensors. The SGEMM limit counts only the products' FLOPs.",
        "",
        "| H | L | batch | process_many | kernel | torch 1-ev | torch batched | SGEMM limit "
        "| process_many vs torch | kernel vs torch | kernel vs torch 1-ev | process_many / limit "
        "| kernel / limit | SGEMM GFLOP/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.hidden} | {r.layers} | {r.batch} | {r.process_many:,.0f} | {r.kernel:,.0f} "
            f"| {_ns(r.torch_one)} | {_ns(r.torch_batched)} | {r.sgemm_limit:,.0f} "
            f"| {_ratio(r.torch_batched, r.process_many)} | {_ratio(r.torch_batched, r.kernel)} "
            f"| {_ratio(r.torch_one, r.kernel)} "
            f"| {r.process_many / r.sgemm_limit:.2f} | {r.kernel / r.sgemm_limit:.2f} "
            f"| {r.sgemm_gflops:.1f} |"
        )
    out += [
        "",
        "State per stream (`StreamTable.bytes_per_stream`: h, c, forecast, scorer and alert"
        " state, bookkeeping):",
        "",
        "| H | L | bytes / stream | streams / GiB |",
        "|---:|---:|---:|---:|",
    ]
    seen = set()
    for r in rows:
        if (r.hidden, r.layers) in seen:
            continue
        seen.add((r.hidden, r.layers))
        per_gib = 2**30 // r.bytes_per_stream
        out.append(f"| {r.hidden} | {r.layers} | {r.bytes_per_stream:,} | {per_gib:,} |")
    return "\n".join(out) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: Sequence[str] | None = None, default_out: Path | None = None) -> int:
    """Entry for ``benchmarks/bench_kernels.py`` (which sets the thread environment itself)."""
    p = argparse.ArgumentParser(prog="bench_kernels.py", description=HELP,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    add_arguments(p)
    if default_out is not None:
        p.set_defaults(out=default_out)
    args = p.parse_args(argv)
    return run(args)
