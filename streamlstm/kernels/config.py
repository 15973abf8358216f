"""Numba flags for every kernel, in one place (stumpy's habit).

- ``cache=True``: compiled kernels are written next to the sources (or to
  ``NUMBA_CACHE_DIR``) so a restarted daemon or a second test session does not
  pay the compile again.
- ``fastmath=False``: results must not depend on how many events share a
  micro-batch. Re-association would let LLVM sum a dot product in a different
  order in the vectorised body and in the remainder loop, and batched results
  would stop being bit-identical to per-event ones.
- ``error_model="numpy"``: the default "python" model inserts a
  division-by-zero branch in front of every float division, which blocks
  vectorisation of the gate loops.
- ``boundscheck=False``: the public wrappers validate shapes once per call.
"""

from __future__ import annotations

from typing import Any

NJIT: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
    "boundscheck": False,
}

# Kernels that split independent rows over threads with prange; same numerics as NJIT.
NJIT_PARALLEL: dict[str, Any] = {**NJIT, "parallel": True}

# Training kernels (streamlstm.kernels.train) may fuse a * b + c into one FMA
# ("contract"; no re-association):
# it halves the arithmetic of their small matrix products. Results still do not
# depend on the minibatch split or the thread count (every row runs the same code),
# which is all training needs; the scoring kernels keep NJIT.
NJIT_TRAIN: dict[str, Any] = {**NJIT, "fastmath": {"contract"}}
NJIT_TRAIN_PARALLEL: dict[str, Any] = {**NJIT_TRAIN, "parallel": True}
