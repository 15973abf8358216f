"""``${NAME}`` in YAML values: taken from the environment when the config is read.

    client_id: "streamlstm-${POD_NAME}"     # one id per pod
    bootstrap_servers: ["${KAFKA_BOOTSTRAP:-localhost:9092}"]
    port: ${METRICS_PORT:-10131}            # a whole-value reference keeps its YAML type

``${NAME:-default}`` uses ``default`` when ``NAME`` is unset or empty; ``$${`` is
a literal ``${``. A reference to an unset variable without a default is an error
that names the YAML path. Keys are never substituted; secrets still belong in
``*_env`` / ``*_file`` settings, which are read only where they are used.

>>> interpolate({"a": ["${X}-1", "${Y:-7}"], "p": "${P}"}, {"X": "x", "P": "9"})
({'a': ['x-1', 7], 'p': 9}, [])
>>> interpolate({"a": "cost: $${X}"}, {"X": "x"})[0]
{'a': 'cost: ${X}'}
>>> interpolate({"a": "${NOPE}"}, {})[1]
['a: ${NOPE} is not set in the environment (give a default: ${NOPE:-value})']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(data: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """``data`` with every ``${...}`` of its string values replaced; (result, errors)."""
    errors: list[str] = []
    return _walk(data, env, path, errors), errors


def _walk(node: Any, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    if isinstance(node, dict):
        return {
            k: _walk(v, env, f"{path}.{k}" if path else str(k), errors) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_walk(v, env, f"{path}[{i}]", errors) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        return _subst(node, env, path, errors)
    return node


def _subst(text: str, env: Mapping[str, str], path: str, errors: list[str]) -> Any:
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        errors.append(
            f"{path}: ${{{name}}} is not set in the environment "
            f"(give a default: ${{{name}:-value}})"
        )
        return ""

    whole = _REF.fullmatch(text)
    out = _REF.sub(one, text)
    if whole and whole.group(0) != "$${":
        try:  # a whole-value reference takes the YAML type of what it holds
            return yaml.safe_load(out) if out else out
        except yaml.YAMLError:
            return out
    return out
