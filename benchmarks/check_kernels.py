"""Quick guard for kernel optimisation work (not a test suite).

Three checks, each printing PASS/FAIL:

1. batched == per-event, bit for bit: the same event stream through
   ``Detector.process_many`` in one batch, in random-size batches and one
   event at a time gives identical scores, forecasts and final state;
2. golden: with ``--save PATH`` the outputs are written; with ``--against
   PATH`` they must equal a file written earlier (e.g. by the unoptimised
   kernels), bit for bit, or within ``GOLDEN_ATOL`` with ``--tolerant``
   (for changes that legitimately move bits, such as a new exp);
3. PyTorch parity of the wave kernels (``_lstm_wave`` / ``_gru_wave``) and
   the head against ``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` over several
   steps, within ``PARITY_ATOL``.

Run: ``.venv/bin/python benchmarks/check_kernels.py [--save|--against F]``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.kernels import cells
from streamlstm.model import Model

PARITY_ATOL = 1e-5
# Forecasts and scores after hundreds of recurrent steps; an exp/tanh that moves
# results by an ulp per step must stay well inside this.
GOLDEN_ATOL = 1e-4

CASES = [
    # cell, hidden, layers, time_input, n_features, streams (> detect.CHUNK: waves get cut)
    ("lstm", 1, 1, False, 3, 37),
    ("lstm", 5, 2, True, 3, 37),
    ("lstm", 16, 1, False, 8, 37),
    ("lstm", 33, 2, True, 8, 37),
    ("lstm", 64, 1, False, 8, 37),
    ("lstm", 64, 2, False, 8, 300),
    ("lstm", 128, 1, True, 8, 37),
    ("gru", 7, 1, False, 3, 37),
    ("gru", 64, 2, True, 8, 300),
]


def _events(rng: np.random.Generator, n_streams: int, n_events: int, n_feat: int):
    keys = [f"k{int(i)}" for i in rng.integers(0, n_streams, n_events)]
    times = np.sort(rng.uniform(0, 1000.0, n_events))
    x = rng.normal(size=(n_events, n_feat))
    x[rng.random((n_events, n_feat)) < 0.05] = np.nan
    return keys, times, x


def _run(model: Model, keys, times, x, sizes) -> dict[str, np.ndarray]:
    det = Detector(model, DetectorConfig(warmup=3))
    scores, fcs = [], []
    i = 0
    for size in sizes:
        res = det.process_many(keys[i : i + size], times[i : i + size], x[i : i + size])
        scores.append(res.score)
        fcs.append(res.forecast)
        i += size
    assert i == len(keys)
    order = sorted(det.table.keys())
    state = {
        name: np.stack([det.stream_state(k)[name] for k in order]) for name in ("h", "c", "fc")
    }
    return {"score": np.concatenate(scores), "forecast": np.concatenate(fcs), **state}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 0.0) -> list[str]:
    bad = []
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            bad.append(f"{name}: shape {x.shape} vs {y.shape}")
        elif atol == 0.0:
            if x.tobytes() != y.tobytes():
                n = int(np.sum(x.view(np.uint8) != y.view(np.uint8)))
                bad.append(f"{name}: {n} bytes differ")
        else:
            with np.errstate(invalid="ignore"):
                d = np.nanmax(np.abs(x.astype(np.float64) - y)) if x.size else 0.0
            if not np.array_equal(np.isnan(x), np.isnan(y)) or d > atol:
                bad.append(f"{name}: max abs diff {d:.3g}")
    return bad


def check_batching(golden: dict[str, np.ndarray]) -> bool:
    ok = True
    for ci, (cell, hid, layers, tin, nf, n_streams) in enumerate(CASES):
        rng = np.random.default_rng(100 + ci)
        model = Model.random(
            [f"f{j}" for j in range(nf)],
            hidden=hid,
            layers=layers,
            cell=cell,
            seed=ci,
            time_input=tin,
        )
        keys, times, x = _events(rng, n_streams, 700 if n_streams < 100 else 1500, nf)
        n = len(keys)
        one = _run(model, keys, times, x, [n])
        sizes = []
        left = n
        while left:
            s = int(min(left, rng.integers(1, 90 if n_streams < 100 else 700)))
            sizes.append(s)
            left -= s
        rand = _run(model, keys, times, x, sizes)
        single = _run(model, keys, times, x, [1] * n)
        bad = _same(one, rand) + _same(one, single)
        tag = f"{cell} H={hid} L={layers} dt={tin}"
        print(f"{'PASS' if not bad else 'FAIL'} batched==per-event {tag} {bad or ''}")
        ok &= not bad
        for name, arr in one.items():
            golden[f"{ci}.{name}"] = arr
    return ok


def _par(net, name: str, layers: int) -> tuple[np.ndarray, ...]:
    return tuple(getattr(net, f"{name}_l{k}").detach().numpy() for k in range(layers))


def check_parity() -> bool:
    try:
        import torch
    except ModuleNotFoundError:
        print("SKIP parity: torch not installed")
        return True
    torch.manual_seed(0)
    ok = True
    for cell in ("lstm", "gru"):
        for hid, layers, m in ((1, 1, 1), (16, 2, 5), (64, 1, 37), (64, 2, 64), (128, 1, 9)):
            n_in = 8
            mod_cls = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
            net = mod_cls(n_in, hid, num_layers=layers)
            head = torch.nn.Linear(hid, n_in)

            model = Model(
                cell=cell, features=tuple(f"f{j}" for j in range(n_in)), hidden=hid,
                weight_ih=_par(net, "weight_ih", layers), weight_hh=_par(net, "weight_hh", layers),
                bias_ih=_par(net, "bias_ih", layers), bias_hh=_par(net, "bias_hh", layers),
                head_weight=head.weight.detach().numpy(), head_bias=head.bias.detach().numpy(),
                norm_mean=np.zeros(n_in, np.float32), norm_std=np.ones(n_in, np.float32),
                resid_scale=np.ones(n_in, np.float32),
            )  # fmt: skip
            w = model.kernel_weights()
            steps = 20
            xs = torch.randn(steps, m, n_in) * 2
            with torch.no_grad():
                y, _ = net(xs)
                fc_ref = head(y[-1]).numpy()
            y = y.numpy()
            n_slots = m + 3
            slots = np.random.default_rng(1).permutation(n_slots)[:m].astype(np.int64)
            h = np.zeros((n_slots, layers, hid), np.float32)
            c = np.zeros((n_slots, layers, hid if cell == "lstm" else 0), np.float32)
            width = max(w.w_ih.shape[1], hid)
            x_rows = np.zeros((m, width), np.float32)
            hbuf = np.zeros((m, width), np.float32)
            gi = np.empty((m, w.w_ih.shape[2]), np.float32)
            gh = np.empty_like(gi)
            err = 0.0
            for t in range(steps):
                x_rows[:, :n_in] = xs[t].numpy()
                if cell == "lstm":
                    cells._lstm_wave(
                        x_rows, m, n_in, slots, h, c, w.w_ih, w.w_hh, w.b_ih, w.b_hh, hbuf, gi, gh
                    )
                else:
                    cells._gru_wave(
                        x_rows, m, n_in, slots, h, w.w_ih, w.w_hh, w.b_ih, w.b_hh, hbuf, gi, gh
                    )
                err = max(err, float(np.max(np.abs(h[slots, -1, :] - y[t]))))
            fc = np.empty((m, n_in), np.float32)
            cells._head_rows(hbuf, m, hid, w.w_head, w.b_head, fc)
            err = max(err, float(np.max(np.abs(fc - fc_ref))))
            good = err <= PARITY_ATOL
            ok &= good
            print(
                f"{'PASS' if good else 'FAIL'} torch parity {cell} H={hid} L={layers} m={m} "
                f"max abs err {err:.2e}"
            )
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--save", help="write the outputs to this .npz")
    g.add_argument("--against", help="compare the outputs with this .npz")
    p.add_argument("--tolerant", action="store_true", help=f"golden within {GOLDEN_ATOL}")
    args = p.parse_args(argv)
    golden: dict[str, np.ndarray] = {}
    ok = check_batching(golden)
    if args.save:
        np.savez(args.save, **golden)
        print(f"saved {args.save}")
    if args.against:
        with np.load(args.against) as ref:
            bad = []
            for k in ref.files:
                bad += [
                    f"{k}: {b}"
                    for b in _same(
                        {"v": golden[k]}, {"v": ref[k]}, GOLDEN_ATOL if args.tolerant else 0.0
                    )
                ]
        worst: dict[str, float] = {}
        with np.load(args.against) as ref:
            for k in ref.files:
                name = k.split(".", 1)[1]
                with np.errstate(invalid="ignore"):
                    d = np.abs(golden[k].astype(np.float64) - ref[k])
                worst[name] = max(worst.get(name, 0.0), float(np.nanmax(d)) if d.size else 0.0)
        print("max abs diff vs golden: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
        print(
            f"{'PASS' if not bad else 'FAIL'} golden ({'tolerant' if args.tolerant else 'exact'}) "
            f"{bad[:8] or ''}"
        )
        ok &= not bad
    ok &= check_parity()
    print("ALL PASS" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
