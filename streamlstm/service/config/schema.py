"""The pipeline YAML as a JSON Schema (draft 2020-12), rendered from the key tables
the parser validates with (:mod:`streamlstm.service.config.keys`).

The schema checks what a schema can: key names (unknown keys are refused, as the
parser refuses them), types, choices, patterns, ranges and required keys; it gives
defaults and meanings for editors. The parser checks more: files exist, secrets
are set, settings that must go together, the ranges of the detector settings
(DetectorConfig checks those itself) and ``extra``'s kafka-python names. So a file
that passes the schema may still fail ``check-config``, never the reverse.

``${VAR}`` references are substituted before validation, so a non-string setting
written as ``"${PORT:-10131}"`` fails the schema of its raw text; validate the file
after substitution, or let ``check-config`` do it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamlstm.service.config.keys import TOP, Key, _Computed

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a streamlstm config file."""
    doc = _object(TOP)
    return {
        "$schema": DIALECT,
        "$id": "https://streamlstm.invalid/schema/pipeline-config.json",
        "title": "streamlstm pipeline configuration",
        "description": "config/pipeline.yaml documents every option; `streamlstm "
        "check-config FILE` checks what a schema cannot (files, secrets, models).",
        **doc,
    }


def _object(table: Mapping[str, Key]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": ["object", "null"],  # an empty section (`metrics:`) reads as null
        "properties": {k: _key(spec) for k, spec in table.items()},
        "additionalProperties": False,
    }
    required = [k for k, spec in table.items() if spec.required]
    if required:
        out["type"] = "object"
        out["required"] = required
    return out


def _key(k: Key) -> dict[str, Any] | bool:
    if k.refused:
        return False  # a JSON Schema that no value matches
    s: dict[str, Any]
    if k.type == "object" and isinstance(k.items, Mapping):
        s = _object(k.items)
    elif k.type == "array":
        s = {"type": "array", "items": _items(k.items, k.shorthand)}
        if k.required:
            s["minItems"] = 1
    else:
        s = {"type": k.type}
        if k.choices is not None:
            s = {"enum": list(k.choices)}
        if k.pattern is not None:
            s["pattern"] = k.pattern.pattern
        if k.type == "string" and k.choices is None:
            s["minLength"] = 1
        _bounds(s, k)
    if k.what and k.what != "a non-empty string":
        s["description"] = k.what
    if isinstance(k.default, _Computed):
        if k.default.text != "none":
            s["description"] = f"{s.get('description', k.type)}; default: {k.default.text}"
    else:
        s["default"] = k.default
    if k.one_as_list and k.type == "array":
        # `topics: readings` reads as `topics: [readings]`.
        s = {"anyOf": [s, _lone(k)], **_meta(s)}
    if k.nullable:
        s = {"anyOf": [s, {"type": "null"}], **_meta(s)} if "anyOf" not in s else s
        if "anyOf" in s and {"type": "null"} not in s["anyOf"]:
            s["anyOf"].append({"type": "null"})
    return s


def _items(items: Key | Mapping[str, Key] | None, shorthand: bool = False) -> dict[str, Any] | bool:
    if items is None:
        return True
    if isinstance(items, Key):
        return _key(items)
    obj = _object(items)
    obj["type"] = "object"
    return {"anyOf": [obj, {"type": "string", "minLength": 1}]} if shorthand else obj


def _lone(k: Key) -> dict[str, Any] | bool:
    """The schema of a list given as its one element (or a comma-separated string)."""
    one = _items(k.items)
    if k.comma_separated and isinstance(one, dict) and "pattern" in one:
        inner = one["pattern"].removeprefix("^").removesuffix("$")
        one = {**one, "pattern": rf"^\s*{inner}\s*(,\s*{inner}\s*)*$"}
    return one


def _bounds(s: dict[str, Any], k: Key) -> None:
    if k.lo is not None and k.lo > -(2**62):
        s["minimum"] = k.lo
    if k.hi is not None:
        s["maximum"] = k.hi
    if k.ge is not None:
        s["minimum"] = k.ge
    if k.gt is not None:
        s["exclusiveMinimum"] = k.gt


def _meta(s: dict[str, Any]) -> dict[str, Any]:
    """Move the description and default of ``s`` up to the schema that wraps it."""
    return {m: s.pop(m) for m in ("description", "default") if m in s}
