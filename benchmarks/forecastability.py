"""How much better than the last value can any one-step forecast of the synthetic fleet be?

    .venv/bin/python benchmarks/forecastability.py

For each seed of ``quality_synth.py``, a linear forecaster of the next event from the
last ``p`` events of all four channels (a pooled VAR(p) with an intercept, least
squares on the first 80% of each stream of the clean training fleet, judged on the last
20%), against the last value on the same targets; and VAR(4) fitted to each stream
alone (its own loadings). The LSTM of ``quality_synth.py`` shares its weights across
streams (its hidden state can adapt to each); its validation MSE is in that script's
table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_synth import fleet  # noqa: E402


def design(v: np.ndarray, p: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for s in range(v.shape[0]):
        for t in range(max(a, p), b - 1):
            xs.append(np.concatenate([v[s, t - k] for k in range(p)] + [np.ones(1)]))
            ys.append(v[s, t + 1])
    return np.array(xs), np.array(ys)


def main() -> None:
    print("| seed | last value MSE | VAR(1) | VAR(2) | VAR(4) | VAR(8) | best / last value "
          "| VAR(4) per stream / last value |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for seed in (20261121, 1, 2, 3):
        v = fleet(seed, 0.0, 8, 3000).values.astype(np.float64)
        n_feat = v.shape[2]
        cut = int(v.shape[1] * 0.8)
        row, best, lv = [], np.inf, np.nan
        for p in (1, 2, 4, 8):
            xtr, ytr = design(v, p, 0, cut)
            xva, yva = design(v, p, cut, v.shape[1])
            w, *_ = np.linalg.lstsq(xtr, ytr, rcond=None)
            mse = float(((xva @ w - yva) ** 2).mean())
            lv = float(((xva[:, :n_feat] - yva) ** 2).mean())
            row.append(mse)
            best = min(best, mse)
        cells = " | ".join(f"{m:.4f}" for m in row)
        own, own_lv = 0.0, 0.0
        for s in range(v.shape[0]):
            xtr, ytr = design(v[s : s + 1], 4, 0, cut)
            xva, yva = design(v[s : s + 1], 4, cut, v.shape[1])
            w, *_ = np.linalg.lstsq(xtr, ytr, rcond=None)
            own += float(((xva @ w - yva) ** 2).sum())
            own_lv += float(((xva[:, :n_feat] - yva) ** 2).sum())
        print(f"| {seed} | {lv:.4f} | {cells} | {best / lv:.3f} | {own / own_lv:.3f} |")


if __name__ == "__main__":
    main()
