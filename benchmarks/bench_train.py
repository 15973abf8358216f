"""Training speed: streamlstm's Numba BPTT vs PyTorch (nn.LSTM / nn.GRU, CPU), same work.

Both train the same architecture (cell, layers, hidden, linear head) on the
same synthetic fleet, with the same windows and minibatches (drawn by the
streamlstm trainer's sampler from one seed), the same loss (mean squared
one-step error), Adam and global-norm clipping, for the same number of
epochs, on the same number of threads. The data has no missing values, so
both compute the same function (streamlstm's NaN imputation is idle).
Validation and calibration are off: this times the training epochs only.

    python benchmarks/bench_train.py                 # hidden 16, 32, 64; LSTM
    python benchmarks/bench_train.py --cell gru --hidden 32 --threads 1

PyTorch is a test/benchmark-only dependency.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kernels import train as KT
from streamlstm.training import trainer as T
from streamlstm.training.data import prepare


def batches(data, cfg: T.TrainConfig, epoch_seed: int):
    rng = np.random.default_rng(epoch_seed)
    wins = T._windows(data, cfg.window, rng)
    perm = rng.permutation(len(wins))
    out = []
    for b0 in range(0, len(perm), cfg.batch):
        sel = [wins[j] for j in perm[b0 : b0 + cfg.batch]]
        x = np.empty((len(sel), cfg.window, data.n_features), np.float32)
        y = np.empty_like(x)
        T._fill_batch(data, sel, cfg.window, 0, x, y)
        # full windows only, so no padding NaN reaches PyTorch
        keep = ~np.isnan(y).any(axis=(1, 2))
        if keep.any():
            out.append((np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])))
    return out


def run_streamlstm(data, cfg: T.TrainConfig, epochs: list[list]) -> list[tuple[float, float]]:
    import numba

    numba.set_num_threads(cfg.threads or numba.config.NUMBA_NUM_THREADS)
    init = T.Model.random(data.features, cfg.hidden, cfg.layers, cfg.cell, seed=cfg.seed)
    net = KT.Net(cfg.cell, {k: v.copy() for k, v in init.arrays().items()})
    opt = T.Adam(net.params, cfg.lr)
    wss: dict[int, KT.Workspace] = {}
    # compile outside the timing
    x0, y0 = epochs[0][0]
    KT.loss_and_grad(
        net, x0, y0, chunk=cfg.chunk, workspace=wss.setdefault(len(x0), KT.Workspace())
    )
    times = []
    for bl in epochs:
        t0, c0 = time.perf_counter(), time.process_time()
        for x, y in bl:
            ws = wss.setdefault(len(x), KT.Workspace())
            _, _, g = KT.loss_and_grad(net, x, y, chunk=cfg.chunk, workspace=ws)
            T.clip_global_norm(g, cfg.clip)
            opt.step(net.params, g)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def run_torch(data, cfg: T.TrainConfig, epochs: list[list]) -> list[tuple[float, float]]:
    import torch

    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    torch.manual_seed(cfg.seed)
    rnn_cls = torch.nn.LSTM if cfg.cell == "lstm" else torch.nn.GRU
    rnn = rnn_cls(data.n_features, cfg.hidden, cfg.layers, batch_first=True)
    head = torch.nn.Linear(cfg.hidden, data.n_features)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(torch.from_numpy(x))
        loss = torch.nn.functional.mse_loss(head(out), torch.from_numpy(y))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()

    step(*epochs[0][0])  # warm-up
    times = []
    for bl in epochs:
        t0, c0 = time.perf_counter(), time.process_time()
        for x, y in bl:
            step(x, y)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    feats = ("temp", "pressure", "flow", "vibration", "f4", "f5", "f6", "f7")[: args.features]
    fleet = generate_fleet(
        FleetSpec(n_streams=args.streams, n_steps=args.steps, anomaly_rate=0, features=feats)
    )
    keys, times, x, _ = fleet.events()
    data = prepare(keys, times, x, feats, 0.0, False)
    print(
        f"{args.cell.upper()} layers={args.layers} window={args.window} batch={args.batch} "
        f"threads={args.threads}; {args.streams} streams x {args.steps} events, "
        f"{len(feats)} features; median of {args.epochs} epochs"
    )
    print("wall = elapsed seconds per epoch; cpu = CPU seconds of all threads (the fairer")
    print("number on a shared machine); ratio = torch / streamlstm, > 1: streamlstm is faster")
    print(f"{'hidden':>6} {'ours wall':>10} {'torch wall':>11} {'ratio':>6} "
          f"{'ours cpu':>9} {'torch cpu':>10} {'ratio':>6}")  # fmt: skip
    for hid in args.hidden:
        cfg = T.TrainConfig(
            cell=args.cell, hidden=hid, layers=args.layers, window=args.window,
            batch=args.batch, epochs=args.epochs, threads=args.threads,
        )  # fmt: skip
        epochs = [batches(data, cfg, e) for e in range(args.epochs)]
        ours = np.median(np.asarray(run_streamlstm(data, cfg, epochs)), axis=0)
        theirs = np.median(np.asarray(run_torch(data, cfg, epochs)), axis=0)
        print(f"{hid:>6} {ours[0]:>10.3f} {theirs[0]:>11.3f} {theirs[0] / ours[0]:>5.1f}x "
              f"{ours[1]:>9.3f} {theirs[1]:>10.3f} {theirs[1] / ours[1]:>5.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
