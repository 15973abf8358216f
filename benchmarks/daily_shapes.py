"""A machine on a schedule: daily square waves, clean and with an incident on day 10.

    .venv/bin/python benchmarks/daily_shapes.py [--time-scale 0.001]

Each shape is 4,032 five-minute events (14 days, NAB's artificial daily series'
length and rate): a level switching between 20 and 80 at 00:00 and 12:00 (noise sd
2 unless named), scored as NAB's protocol runs the product (the last-value model,
normalised on the first 15%, which is what ``streamlstm train`` keeps for a
one-feature history that short; the detector's defaults). Openings before day 10's
high half (event 3,024) on a clean day are false; ``caught`` says whether an alert
opened during day 10's incident (3,024-3,167). ``--time-scale 0.001`` gives the
times in thousands of seconds, as ``../shared/eval/run_cli.py`` passes them with
pandas 3 (``to_datetime`` gives microseconds, which it divides by 1e9): five minutes
are 0.3, a day 86.4, and the time-of-day memory never sees a day.
"""

from __future__ import annotations

import argparse

import numpy as np

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.model.baselines import last_value_model

N = 4032
DAY = 288
INCIDENT = slice(10 * DAY + DAY // 2, 11 * DAY)


def shapes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(N)
    square = np.where(t % DAY < DAY // 2, 20.0, 80.0)
    noise = rng.normal(0, 2, N)
    weekday = (t // DAY + 1) % 7 < 5  # day 0 a Tuesday, as 2014-04-01 was
    out = {
        "square, no noise": square.copy(),
        "square": square + noise,
        "square, noise sd 10": square + rng.normal(0, 10, N),
        "square on weekdays only": np.where(weekday, square, 20.0) + noise,
    }
    for name, level in (("jumps up to 120", 120.0), ("jumps only to 50", 50.0),
                        ("no jump", 20.0)):  # fmt: skip
        v = square.copy()
        v[INCIDENT] = level
        out[name] = v + noise
    v = square + noise
    v[10 * DAY : 11 * DAY] = v[10 * DAY]
    out["flat day"] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-scale", type=float, default=1.0, help="times are seconds x this")
    args = ap.parse_args()
    print("| shape | openings | false (outside day 10) | day 10's incident caught |")
    print("|---|---|---|---|")
    for name, v in shapes(np.random.default_rng(1)).items():
        head = v[: int(N * 0.15)]
        m = last_value_model(["value"], np.array([head.mean()]), np.array([head.std()]))
        times = (1_396_310_400.0 + 300.0 * np.arange(N)) * args.time_scale
        r = Detector(m, DetectorConfig()).process_many(["s"] * N, times, v[:, None])
        opens = [t.index for t in r.transitions if t.kind == "opened"]
        day10 = range(10 * DAY, 11 * DAY)
        false = [i for i in opens if i not in day10]
        clean = name.startswith("square")
        caught = "-" if clean else ("yes" if r.alert[INCIDENT].any() else "no")
        print(f"| {name} | {len(opens)} | {len(false)} | {caught} |")


if __name__ == "__main__":
    main()
