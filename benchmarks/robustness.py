"""False alerts of the default detector on signal shapes with no incident in them.

    .venv/bin/python benchmarks/robustness.py

Each shape is 20,000 events of one stream scored with the last-value model
(normalised on its first 2,000 events) and the detector's defaults. Every
opening is a false alert except on ``const_glitch``, which has 20 injected
glitches. Shapes: a random walk, piecewise-constant levels (a jump every 50
events), a sawtooth (reset every 100), a constant with 20 glitches, Poisson
counts (mean 3 and 0.1), a sine with and without noise, a heavy-tailed AR(1),
a quantised random walk, white noise, and a daily square wave (one event a minute:
two jumps a day at the same minutes, with and without noise; NAB's artificial daily
series).
"""

from __future__ import annotations

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model.baselines import last_value_model

N = 20_000


def shapes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {
        "random_walk": np.cumsum(rng.normal(size=N)),
        "step_levels": np.repeat(rng.normal(size=N // 50 + 1) * 5, 50)[:N],
        "sawtooth": (np.arange(N) % 100) / 100.0,
    }
    c = np.zeros(N)
    c[rng.integers(0, N, 20)] = rng.normal(size=20) * 10
    out["const_glitch"] = c
    out["poisson3"] = rng.poisson(3, N).astype(float)
    out["poisson0.1"] = rng.poisson(0.1, N).astype(float)
    out["sine_noisefree"] = np.sin(np.arange(N) * 2 * np.pi / 288)
    out["sine_noise"] = out["sine_noisefree"] + rng.normal(0, 0.1, N)
    ar = np.zeros(N)
    e = rng.standard_t(2, N)
    for i in range(1, N):
        ar[i] = 0.9 * ar[i - 1] + e[i]
    out["ar1_heavy"] = ar
    out["quantized_0.5"] = np.round(np.cumsum(rng.normal(0, 0.1, N)) * 2) / 2
    out["gauss"] = rng.normal(size=N)
    day = np.where(np.arange(N) % 1440 < 720, 20.0, 80.0)
    out["daily_square"] = day
    out["daily_square_noise"] = day + rng.normal(0, 2, N)
    return out


def main() -> None:
    print("| shape | openings | per 10k events | share of events in alert |")
    print("|---|---|---|---|")
    for name, v in shapes(np.random.default_rng(0)).items():
        sd = float(v[:2000].std())
        scale = np.array([sd if sd > 1e-6 else 1.0])
        m = last_value_model(["v"], np.array([v[:2000].mean()]), scale)
        r = Detector(m, DetectorConfig()).process_many(["s"] * N, np.arange(N) * 60.0, v[:, None])
        n = sum(1 for t in r.transitions if t.kind == "opened")
        print(f"| {name} | {n} | {n / N * 1e4:.1f} | {r.alert.mean():.3f} |")


if __name__ == "__main__":
    main()
