"""kernels/layout.py is the one home of every number the kernels share."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from streamlstm.detector import Detector
from streamlstm.kernels import layout as L
from streamlstm.model import Model

KERNELS = Path(L.__file__).parent
# name prefix -> the N_* that counts that table
TABLES = {
    "F_": "N_FSTAT",
    "I_": "N_ISTAT",
    "P_": "N_PARAMS",
    "PF_": "N_PFEAT",
    "WL_": "N_WLAYOUT",
    "EV_": "N_EV",
    "OC_": "N_OCODE",
}


def _table(prefix: str) -> dict[str, int]:
    return {
        n: v
        for n, v in vars(L).items()
        if n.startswith(prefix) and isinstance(v, int) and not n.startswith("N_")
    }


def test_every_table_is_dense_and_counted() -> None:
    for prefix, count in TABLES.items():
        t = _table(prefix)
        if prefix == "P_":  # P_ and PF_ share a first letter
            t = {n: v for n, v in t.items() if not n.startswith("PF_")}
        assert sorted(t.values()) == list(range(getattr(L, count))), (prefix, t)


def test_outcome_and_transition_names_match_their_codes() -> None:
    assert [L.OK, L.IMPUTED, L.TOO_OLD, L.MISSING, L.NON_FINITE, L.OUT_OF_RANGE] == list(
        range(len(L.OUTCOME_NAMES))
    )
    assert [L.NONE, L.OPENED, L.CLOSED] == list(range(len(L.TRANSITION_NAMES)))


def test_no_other_kernel_module_retypes_a_layout_number() -> None:
    shared = {n for n in vars(L) if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}
    for f in KERNELS.glob("*.py"):
        if f.name == "layout.py":
            continue
        for node in ast.parse(f.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            assert not names & shared, f"{f.name} redefines {names & shared}"


def test_state_columns_have_the_widths_the_kernels_index() -> None:
    cols = Detector.columns_for(Model.random(["a", "b"], hidden=4))
    assert cols["fstat"].shape == (L.N_FSTAT,)
    assert cols["istat"].shape == (L.N_ISTAT,)
