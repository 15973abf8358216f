"""The layer rule of ARCHITECTURE.md: dependencies point down only.

kernels know nothing but arrays; model and state sit on them; the detector on
those; io sees the detector's types and the feature transforms, never the
service; nothing below io knows Kafka exists. Training and evaluation are
offline tools beside the detector: they run the real Detector (calibration
and replay must score exactly as the daemon does), which the design's table
does not list, deliberately.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "streamlstm"

BASE = {"streamlstm", "streamlstm.errors"}
ALLOWED: dict[str, set[str]] = {
    "streamlstm.kernels": {"streamlstm._numba_config", "streamlstm.kernels"},
    "streamlstm.model": BASE | {"streamlstm.kernels"},
    "streamlstm.state": BASE,
    "streamlstm.detector": BASE | {"streamlstm.kernels", "streamlstm.model", "streamlstm.state"},
    "streamlstm.io": BASE | {"streamlstm.io", "streamlstm.features", "streamlstm.detector"},
    "streamlstm.training": BASE
    | {
        "streamlstm.kernels",
        "streamlstm.model",
        "streamlstm.state",
        "streamlstm.detector",
        "streamlstm.training",
    },  # fmt: skip
}
NO_KAFKA = ("streamlstm.kernels", "streamlstm.model", "streamlstm.state", "streamlstm.detector",
            "streamlstm.training", "streamlstm.evaluation")  # fmt: skip
UPPER = ("streamlstm.service", "streamlstm.commands", "streamlstm.cli", "streamlstm.__main__")


def modules() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        mod = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
        out[mod] = imported
    return out


def _within(name: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    bad = {
        mod: sorted(
            i for i in imps if i.startswith("streamlstm") and not _within(i, ALLOWED[layer])
        )
        for mod, imps in modules().items()
        if _within(mod, (layer,))
    }
    assert not {m: b for m, b in bad.items() if b}


def test_nothing_below_the_service_imports_it() -> None:
    for mod, imps in modules().items():
        if not _within(mod, UPPER):
            assert not [i for i in imps if _within(i, UPPER)], mod


def test_nothing_below_io_knows_kafka() -> None:
    for mod, imps in modules().items():
        if _within(mod, NO_KAFKA):
            assert not [i for i in imps if i == "kafka" or i.startswith("kafka.")], mod
