"""Kernel benchmark: ``streamlstm bench`` with the table saved next to this file.

    python benchmarks/bench_kernels.py          # full table -> benchmarks/results.md
    python benchmarks/bench_kernels.py --quick  # CI smoke subset

Same code and options as ``streamlstm bench`` (see :mod:`streamlstm.cli.bench`).
"""

import os
import sys
from pathlib import Path

# Single thread, fixed before numpy/numba/torch size their thread pools
# (must match streamlstm.cli.bench.THREAD_ENV, which is checked at run time).
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from streamlstm.cli import bench  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench.main(sys.argv[1:], default_out=Path(__file__).resolve().parent / "results.md"))
