"""The layout rule (issue #8): no module over ~400 lines without a reason written at its
top, no kernel function over ~80 lines without one in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "streamlstm"
MODULE_LINES = 400
KERNEL_FUNC_LINES = 80


def test_long_modules_say_why_at_their_top() -> None:
    missing = []
    for p in sorted(PKG.rglob("*.py")):
        text = p.read_text()
        if text.count("\n") > MODULE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Length:" not in doc:
                missing.append(str(p.relative_to(PKG.parent)))
    assert not missing, f"modules over {MODULE_LINES} lines with no 'Length:' reason: {missing}"


def test_long_kernel_functions_say_why() -> None:
    missing = []
    for p in sorted((PKG / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > KERNEL_FUNC_LINES and "Why one function" not in doc:
                    missing.append(f"{p.name}:{node.name} ({n} lines)")
    assert not missing, f"kernel functions over {KERNEL_FUNC_LINES} lines, no reason: {missing}"
