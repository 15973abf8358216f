"""Reading YAML for the configuration: a strict loader and a checked view of one mapping.

Kept apart from :mod:`streamlstm.service.config` so that file holds only the schema.

- :class:`Loader`: PyYAML's SafeLoader, but duplicate keys are errors (PyYAML keeps
  the last silently) and ``1e12`` is a float (YAML 1.1 reads it as a string).
- :class:`Section`: one mapping at a YAML path; unknown keys are refused on
  construction with a "did you mean" hint; typed getters raise :class:`Invalid`
  naming the path, the value found and what was expected.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from streamlstm.service.config.keys import Key


class Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads ``1e12`` as a float."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class Invalid(Exception):
    """One validation failure at ``path``; collected by :meth:`_Parser.section`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def _kind(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def found(v: Any) -> str:
    text = repr(v)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({_kind(v)})" if not isinstance(v, str) else text


class Section:
    """One YAML mapping being read; unknown keys are rejected on construction."""

    def __init__(self, data: Any, path: str, allowed: tuple[str, ...] | Mapping[str, Key]) -> None:
        self.specs: Mapping[str, Key] = allowed if isinstance(allowed, Mapping) else {}
        allowed = tuple(allowed)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise Invalid(path, f"found {found(data)}, expected a mapping")
        self.data = data
        self.path = path
        for k in data:
            if not isinstance(k, str):
                raise Invalid(path, f"key {k!r} is not a string")
            if k not in allowed:
                near = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise Invalid(
                    self.at(k), f"unknown key {k!r}{hint} (allowed: {', '.join(sorted(allowed))})"
                )

    def read(self, key: str, default: Any = None) -> Any:
        """The scalar ``key``, checked as its :class:`~streamlstm.service.config.keys.Key`
        declares; ``default`` only where the spec's default is computed by the parser."""
        k = self.specs[key]
        d: Any = k.default if isinstance(k.default, (str, int, float, type(None))) else default
        if k.type == "string":
            return self.text(
                key, d, choices=k.choices, pattern=k.pattern, what=k.what,
                nullable=k.nullable, required=k.required,
            )  # fmt: skip
        if k.type == "integer":
            assert k.lo is not None
            return self.integer(key, d, k.lo, k.hi)
        if k.type == "number":
            return self.number(key, d, gt=k.gt, ge=k.ge, nullable=k.nullable)
        if k.type == "boolean":
            return self.flag(key, d)
        raise TypeError(f"{key}: a {k.type} setting has no scalar reader")

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def bad(self, key: str, v: Any, expected: str) -> Invalid:
        return Invalid(self.at(key), f"found {found(v)}, expected {expected}")

    def text(
        self,
        key: str,
        default: str | None,
        *,
        choices: tuple[str, ...] | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "a non-empty string",
        nullable: bool = False,
        required: bool = False,
    ) -> Any:
        if key not in self.data:
            if required:
                raise Invalid(self.at(key), f"missing; expected {what}")
            return default
        v = self.data[key]
        if v is None and nullable:
            return None
        if choices is not None:
            if v not in choices:
                raise Invalid(self.at(key), f"{v!r} is not one of {', '.join(choices)}")
            return v
        if not isinstance(v, str) or not v or (pattern is not None and not pattern.match(v)):
            raise self.bad(key, v, what + (" or null" if nullable else ""))
        return v

    def integer(self, key: str, default: int, lo: int, hi: int | None = None) -> int:
        v = self.data.get(key, default)
        want = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise self.bad(key, v, want)
        return v

    def number(
        self,
        key: str,
        default: float | None,
        *,
        gt: float | None = None,
        ge: float | None = None,
        nullable: bool = False,
    ) -> Any:
        v = self.data.get(key, default)
        if v is None and nullable:
            return None
        want = (
            "a number"
            + (f" > {gt}" if gt is not None else "")
            + (f" >= {ge}" if ge is not None else "")
        )
        if nullable:
            want += " or null"
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or v != v
            or v in (float("inf"), float("-inf"))
            or (gt is not None and not v > gt)
            or (ge is not None and not v >= ge)
        ):
            raise self.bad(key, v, want)
        return float(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            raise self.bad(key, v, "true or false")
        return v

    def seq(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise Invalid(self.at(key), "missing; expected a non-empty list")
            return default
        v = self.data[key]
        if isinstance(v, (str, int)) and not isinstance(v, bool):
            return [v]  # `topics: readings` is read as `topics: [readings]`
        if not isinstance(v, list) or (required and not v):
            raise self.bad(key, v, "a non-empty list")
        return v
