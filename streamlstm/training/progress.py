"""Progress on stderr: a live bar on a terminal, one plain line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_BAR = 24


def fmt_seconds(s: float) -> str:
    if s != s or s < 0:  # NaN
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """``epoch 3/30 [#####.....]  41% loss 0.0123 val 0.0150 best 0.0141 ETA 1:12``.

    On a TTY the line is redrawn in place during an epoch; otherwise (logs,
    CI) only one line per finished epoch is written.
    """

    def __init__(self, epochs: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.t_start = time.perf_counter()
        self.t_epoch = self.t_start
        self.epoch = 0
        self._last_draw = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.t_epoch = time.perf_counter()

    def _eta(self, frac_of_epoch: float) -> float:
        done = (self.epoch - 1) + frac_of_epoch
        if done <= 0:
            return float("nan")
        el = time.perf_counter() - self.t_start
        return el / done * (self.epochs - done)

    def batch(self, done: int, total: int, loss: float) -> None:
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and done < total:
            return
        self._last_draw = now
        frac = done / max(total, 1)
        fill = int(round(frac * _BAR))
        self.stream.write(
            f"\repoch {self.epoch}/{self.epochs} [{'#' * fill}{'.' * (_BAR - fill)}] "
            f"{100 * frac:3.0f}% loss {loss:.5f} ETA {fmt_seconds(self._eta(frac))}   "
        )
        self.stream.flush()

    def end_epoch(self, loss: float, val: float | None, best: float | None, note: str = "") -> None:
        if not self.enabled:
            return
        secs = time.perf_counter() - self.t_epoch
        line = (
            f"epoch {self.epoch}/{self.epochs} loss {loss:.5f}"
            + (f" val {val:.5f}" if val is not None else "")
            + (f" best {best:.5f}" if best is not None else "")
            + f" {secs:.1f}s ETA {fmt_seconds(self._eta(1.0))}"
            + (f" {note}" if note else "")
        )
        self.stream.write(("\r" + line + " " * 8 + "\n") if self.tty else line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()
