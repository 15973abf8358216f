"""The layer rule of docs/design.md: every module is in a layer, dependencies point down only.

kernels know nothing but arrays; model, state and io (records and files to
arrays) sit on them; the detector on kernels, model and state; the Kafka wing
of io sees io; training and evaluation are offline tools beside the detector
(they run the real Detector, so calibration and replay score exactly as the
daemon does); offline scoring and the examples sit beside them; the service
wires everything; the cli sits on top. Nothing below the Kafka wing imports
kafka-python.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "streamlstm"

# The package's entry points and its one error tree: the only modules at the top.
TOP = {"streamlstm", "streamlstm.errors", "streamlstm.__main__"}
BASE = {"streamlstm", "streamlstm.errors"}
KERNELS = {"streamlstm.kernels"}
LOW = BASE | KERNELS | {"streamlstm.model", "streamlstm.state", "streamlstm.io"}
ENGINE = LOW | {"streamlstm.detector"}
OFFLINE = ENGINE | {"streamlstm.training", "streamlstm.evaluation", "streamlstm.examples",
                    "streamlstm.offline"}  # fmt: skip
ALLOWED: dict[str, set[str]] = {
    "streamlstm.kernels": KERNELS,
    "streamlstm.model": BASE | KERNELS | {"streamlstm.model"},
    "streamlstm.state": BASE | KERNELS | {"streamlstm.state"},
    "streamlstm.io": BASE | KERNELS | {"streamlstm.io"},
    "streamlstm.detector": BASE
    | KERNELS
    | {"streamlstm.model", "streamlstm.state", "streamlstm.detector"},  # fmt: skip
    "streamlstm.kafka": BASE | {"streamlstm.io", "streamlstm.kafka"},
    "streamlstm.training": ENGINE | {"streamlstm.training"},
    "streamlstm.evaluation": ENGINE | {"streamlstm.training", "streamlstm.evaluation"},
    "streamlstm.examples": LOW | {"streamlstm.examples"},
    "streamlstm.offline": ENGINE | {"streamlstm.offline"},
    "streamlstm.service": ENGINE | {"streamlstm.kafka", "streamlstm.service"},
    "streamlstm.cli": OFFLINE | {"streamlstm.kafka", "streamlstm.service", "streamlstm.cli"},
}
KAFKA_ALLOWED = ("streamlstm.kafka", "streamlstm.service", "streamlstm.cli")


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


def test_every_module_is_in_a_layer() -> None:
    floating = sorted(m for m in modules() if m not in TOP and not _within(m, tuple(ALLOWED)))
    assert not floating, f"modules in no layer (give them a room): {floating}"


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


def test_only_the_kafka_wing_imports_kafka_python() -> None:
    for mod, imps in modules().items():
        if not _within(mod, KAFKA_ALLOWED):
            assert not [i for i in imps if i == "kafka" or i.startswith("kafka.")], mod


def test_only_the_kafka_wing_imports_confluent_kafka() -> None:
    """confluent-kafka is an optional extra: only the modules of that client (imported on
    ``kafka.client: confluent`` alone) and its config check may import it."""
    for mod, imps in modules().items():
        if any(i == "confluent_kafka" or i.startswith("confluent_kafka.") for i in imps):
            assert mod.startswith("streamlstm.kafka.confluent_"), mod


def test_the_daemon_imports_without_confluent_kafka() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "import streamlstm.cli, streamlstm.service.loop, streamlstm.service.app\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_top_level_holds_only_entry_points() -> None:
    top = {p.stem for p in PKG.glob("*.py")}
    assert top == {"__init__", "__main__", "errors"}, top
