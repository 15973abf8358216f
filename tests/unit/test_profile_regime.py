"""benchmarks/profile_regime.py finds every anchor it marks in today's regime.py.

The profile instruments a copy of the scorer at named lines; a change to those lines
must fail here, not the next time someone needs the profile.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "profile_regime", ROOT / "benchmarks" / "profile_regime.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_region_of_the_profile_is_anchored_in_the_scorer():
    tool = _tool()
    src = (ROOT / "streamlstm" / "kernels" / "regime.py").read_text()
    out = tool.instrument(src)
    ast.parse(out)  # the marked copy is still Python
    marks = out.count("_now = _rdtsc()")
    assert marks == len(tool.REGIONS)
    # every region's row lies inside the widened scratch and past the scorer's own rows
    assert tool.BASE_STEP >= 21 and tool.BASE_LEARN + len(tool.REGIONS) < tool.N_ROWS
