"""Compile (or load from Numba's cache) every inference kernel signature.

``python -m streamlstm.service.warmup`` is run at container build time so pods
start with a warm cache; the daemon calls :func:`warmup` before it reports
ready. One call per cell type covers every model size: the kernels take
arrays, so sizes do not create new signatures.
"""

from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    """Run a two-event batch through an LSTM and a GRU detector; returns seconds taken."""
    from streamlstm.detector import Detector, DetectorConfig
    from streamlstm.model import Model

    start = time.perf_counter()
    for cell in ("lstm", "gru"):
        det = Detector(Model.random(["x"], hidden=4, cell=cell), DetectorConfig(warmup=0))
        det.process_many(["a", "a"], np.array([0.0, 1.0]), np.zeros((2, 1)))
    return time.perf_counter() - start


if __name__ == "__main__":  # pragma: no cover
    print(f"streamlstm kernels ready in {warmup():.1f} s")
