"""Labels: anomaly windows (and their kinds) from a JSON file or from a per-row column.

See :mod:`streamlstm.evaluation` for what a window means.

Kinds
-----
A window may name the kind of anomaly it holds (``spike``, ``stuck``, ...), so
the report can say which kinds are caught and which are not. Kinds travel
beside the windows, never inside them: ``windows[key][i]`` is a plain
``(start, end)`` pair and ``kinds[key][i]`` its kind, or None when the label
does not say. Keeping :data:`Window` a pair keeps every caller that unpacks
``for a, b in windows`` working.

- JSON: a window is ``[start, end]`` or ``[start, end, "kind"]``.
- A label column cell is normal when empty, ``0``, ``false``, ``no`` or
  ``normal``; anomalous of no named kind when ``1``, ``true``, ``yes`` or
  ``anomaly`` (any other number: anomalous above 0.5, as before kinds); any
  other text is anomalous of that kind, and consecutive anomalous rows of one
  stream with the same kind form one window. A kind name starts with a letter
  (at most 64 characters of letters, digits, space and ``_-.:/+``), so a
  column of times or notes picked by mistake is an error naming the file,
  line and column rather than thousands of one-row "kinds".
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from streamlstm.errors import InputError
from streamlstm.io.tabular import stream_name_for
from streamlstm.io.times import iso_seconds

Window = tuple[float, float]
Kind = str | None  # None: anomalous, kind not named
Kinds = dict[str, list[Kind]]  # per stream key, aligned with its windows
T = TypeVar("T")

# What a label cell means (case-insensitive, stripped); anything else that is not a
# number must be a kind name.
TRUE_CELLS = frozenset({"1", "1.0", "true", "yes", "y", "t", "anomaly"})
FALSE_CELLS = frozenset({"0", "0.0", "false", "no", "n", "f", "", "normal"})
_KIND_NAME = re.compile(r"[A-Za-z][\w .:/+-]{0,63}")


def parse_time(v: Any, where: str = "labels") -> float:
    """A time as epoch seconds: a number, or ISO-8601 text (no zone = UTC, as tabular)."""
    if isinstance(v, bool):
        raise InputError(f"{where}: {v!r} is not a time")
    if isinstance(v, int | float):
        if math.isfinite(v):
            return float(v)
    elif isinstance(v, str) and v.strip():
        s = v.strip()
        try:
            return float(s)
        except ValueError:
            pass
        iso = iso_seconds(s)
        if iso is not None:
            return iso
    raise InputError(
        f"{where}: cannot read the time {v!r}; expected epoch seconds or ISO-8601 "
        "such as '2024-05-01 12:00:00'"
    )


def load_windows(path: str | os.PathLike[str]) -> dict[str, list[Window]]:
    """Read a JSON file ``{stream: [[start, end], ...]}`` into sorted windows in seconds."""
    return load_labels(path)[0]


def load_labels(path: str | os.PathLike[str]) -> tuple[dict[str, list[Window]], Kinds]:
    """(windows, kinds) of a JSON file ``{stream: [[start, end(, "kind")], ...]}``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: labels file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON: {exc}") from exc
    return parse_labels(doc, where=str(p))


def parse_windows(doc: Any, where: str = "labels") -> dict[str, list[Window]]:
    """Windows of a parsed labels document (kinds, if any, are checked and dropped)."""
    return parse_labels(doc, where)[0]


def parse_labels(doc: Any, where: str = "labels") -> tuple[dict[str, list[Window]], Kinds]:
    """(windows sorted by time, their kinds) of ``{stream: [[start, end(, "kind")], ...]}``."""
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: expected a JSON object {{stream: [[start, end], ...]}}, "
            f"found {type(doc).__name__}"
        )
    out: dict[str, list[Window]] = {}
    kinds: Kinds = {}
    for key, spans in doc.items():
        if not isinstance(spans, list):
            raise InputError(f"{where}: {key!r}: expected a list of [start, end] pairs")
        ws: list[tuple[Window, Kind]] = []
        for i, span in enumerate(spans):
            at = f"{where}: {key!r}[{i}]"
            if not isinstance(span, list | tuple) or len(span) not in (2, 3):
                raise InputError(
                    f'{at}: expected [start, end] or [start, end, "kind"], found {span!r}'
                )
            a, b = parse_time(span[0], at), parse_time(span[1], at)
            if b < a:
                raise InputError(f"{at}: end {span[1]!r} is before start {span[0]!r}")
            kind = _json_kind(span[2], at) if len(span) == 3 else None
            ws.append(((a, b), kind))
        ws.sort(key=lambda wk: wk[0])
        out[str(key)] = [w for w, _ in ws]
        kinds[str(key)] = [k for _, k in ws]
    return out, kinds


def _json_kind(v: Any, at: str) -> Kind:
    if v is None:
        return None
    if not isinstance(v, str) or not _KIND_NAME.fullmatch(v.strip()):
        raise InputError(
            f'{at}: expected [start, end] or [start, end, "kind"], found the kind {v!r}: '
            "a kind name is text that starts with a letter (at most 64 characters)"
        )
    return v.strip()


def parse_label_cells(
    values: Sequence[str], where: str, lines: Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(anomalous (n,) bool, kind (n,) object: str or None) of a label column's cells.

    ``where`` names the file and column for errors (``"f.csv: column 'label'"``);
    ``lines`` are the cells' line numbers in the file (default: 1-based rows).
    """
    n = len(values)
    flags = np.zeros(n, bool)
    kinds = np.full(n, None, dtype=object)
    for i, v in enumerate(values):
        s = v.strip()
        low = s.lower()
        if low in TRUE_CELLS:
            flags[i] = True
        elif low in FALSE_CELLS:
            continue
        elif _KIND_NAME.fullmatch(s) and not _is_number(low):
            flags[i] = True
            kinds[i] = s
        else:
            try:
                f = float(low)
            except ValueError:
                f = math.nan
            if not math.isfinite(f):
                row = f"line {lines[i]}" if lines is not None else f"row {i + 1}"
                raise InputError(
                    f"{where}, {row}: {v!r} is not a label; expected 0/1 (or empty, true, "
                    "false) or a kind name starting with a letter, such as 'spike'"
                )
            flags[i] = f > 0.5
    return flags, kinds


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def windows_from_flags(times: np.ndarray, flags: np.ndarray) -> list[Window]:
    """Runs of consecutive true ``flags`` (one stream, in time order) -> [first, last] times."""
    f = np.asarray(flags, bool)
    if not f.any():
        return []
    edges = np.diff(np.r_[0, f.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True)]


def windows_from_labels(
    times: np.ndarray, flags: np.ndarray, kinds: np.ndarray | None = None
) -> tuple[list[Window], list[Kind]]:
    """:func:`windows_from_flags` that also splits runs where the kind changes.

    ``kinds`` (n,) object, the kind of each anomalous row (None: not named);
    returns the windows and the kind of each.
    """
    f = np.asarray(flags, bool)
    if kinds is None or not f.any():
        ws = windows_from_flags(times, f)
        return ws, [None] * len(ws)
    k = np.asarray(kinds, dtype=object)
    idx = np.flatnonzero(f)
    # a run starts at an anomalous row whose previous row is normal or of another kind
    prev_same = np.zeros(idx.size, bool)
    prev_same[1:] = (np.diff(idx) == 1) & (k[idx[1:]] == k[idx[:-1]])
    starts = idx[~prev_same]
    ends = np.r_[idx[np.flatnonzero(~prev_same)[1:] - 1], idx[-1]]
    ws = [(float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True)]
    return ws, [k[a] for a in starts]


def match_label_keys(
    stream_keys: Sequence[str], windows: Mapping[str, list[T]]
) -> dict[str, list[T]]:
    """Windows per stream key; a label key also matches by file name (``x.csv`` -> ``x``).

    NAB's windows.json is keyed by file name while a file without a key column
    is one stream named after the file without its suffix. Kinds are matched
    the same way (any per-key lists are).
    """
    by_name = {stream_name_for(k): v for k, v in windows.items()}
    out: dict[str, list[T]] = {}
    for k in stream_keys:
        if k in windows:
            out[k] = list(windows[k])
        elif k in by_name:
            out[k] = list(by_name[k])
        else:
            out[k] = []
    return out


def label_points(times: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """(n,) bool: event time inside any window (inclusive)."""
    lab = np.zeros(times.shape[0], bool)
    for a, b in windows:
        lab |= (times >= a) & (times <= b)
    return lab
