"""The warm-up compiles every compiled path the loop can reach, so none stalls it later."""

from __future__ import annotations

import subprocess
import sys

# The kernels Python calls (the others are compiled into these).
ENTRY_KEYMAP = ("_find", "_insert", "_release", "_rebuild", "_compact", "_gather")


def test_warmup_compiles_every_key_map_and_scanner_kernel() -> None:
    # A fresh interpreter: in this one, other tests may have compiled them already.
    code = (
        "from streamlstm.service.warmup import warmup\n"
        "from streamlstm.kernels import keymap, jsonscan\n"
        f"ENTRY_KEYMAP = {ENTRY_KEYMAP!r}\n"
        "warmup()\n"
        "entry = [getattr(keymap, n) for n in ENTRY_KEYMAP]\n"
        "entry += [jsonscan._scan, jsonscan._join_spans]\n"
        "cold = [f.__name__ for f in entry if not f.signatures]\n"
        "print(cold)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
