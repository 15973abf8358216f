"""How long NAB's alerts stay open, inside and outside the labelled windows.

    python benchmarks/nab_alert_rows.py WORK [WORK ...] [--data ../shared/data/nab-realKnownCause]

``WORK`` is a ``--work`` directory of ``../shared/eval/run_cli.py dev``. NAB scores each
alert's opening only, so an alert held for days through normal rows costs it nothing and
spares it the openings that would have come after: a change that closes alerts sooner can
lower the NAB score while the product pages less. This counts, per series and in all,
the openings, the openings outside the labelled windows, and the rows in alert inside and
outside them (the ``alert`` column of the ``score`` output, row for row against the
series' timestamps and ``windows.json``). Standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime
from pathlib import Path


def _rows(work: Path, data: Path) -> list[tuple[str, int, int, int, int]]:
    windows = json.loads((data / "windows.json").read_text())
    out = []
    for scores in sorted((work / "nab" / "tmp").glob("*.scores.csv")):
        name = scores.name.split("__", 1)[1].replace(".scores.csv", ".csv")
        with open(data / name, newline="") as fh:
            times = [datetime.fromisoformat(r["timestamp"]) for r in csv.DictReader(fh)]
        with open(scores, newline="") as fh:
            alert = [r["alert"] == "1" for r in csv.DictReader(fh)]
        if len(alert) != len(times):
            raise SystemExit(f"{scores}: {len(alert)} rows, {name} has {len(times)}")
        spans = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in windows[name]]
        inside = [any(a <= t <= b for a, b in spans) for t in times]
        opens = [i for i, on in enumerate(alert) if on and (i == 0 or not alert[i - 1])]
        out.append(
            (
                name,
                len(opens),
                sum(1 for i in opens if not inside[i]),
                sum(1 for on, w in zip(alert, inside, strict=True) if on and w),
                sum(1 for on, w in zip(alert, inside, strict=True) if on and not w),
            )
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", nargs="+", type=Path, help="run_cli.py --work directories")
    p.add_argument("--data", type=Path, default=Path("../shared/data/nab-realKnownCause"))
    args = p.parse_args()
    print("| run | series | openings | outside the windows | rows in alert inside | outside |")
    print("|---|---|---|---|---|---|")
    for work in args.work:
        rows = _rows(work, args.data)
        for name, n, n_out, r_in, r_out in rows:
            print(f"| {work.name} | {name} | {n} | {n_out} | {r_in:,} | {r_out:,} |")
        tot = [sum(r[k] for r in rows) for k in range(1, 5)]
        print(f"| {work.name} | **all** | {tot[0]} | {tot[1]} | {tot[2]:,} | {tot[3]:,} |")


if __name__ == "__main__":
    main()
