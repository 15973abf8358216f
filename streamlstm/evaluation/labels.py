"""Labels: anomaly windows from a JSON file or from a per-row 0/1 column.

See :mod:`streamlstm.evaluation` for what a window means.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.errors import InputError
from streamlstm.io.tabular import stream_name_for
from streamlstm.io.times import iso_seconds

Window = tuple[float, float]


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
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{p}: labels file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON: {exc}") from exc
    return parse_windows(doc, where=str(p))


def parse_windows(doc: Any, where: str = "labels") -> dict[str, list[Window]]:
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: expected a JSON object {{stream: [[start, end], ...]}}, "
            f"found {type(doc).__name__}"
        )
    out: dict[str, list[Window]] = {}
    for key, spans in doc.items():
        if not isinstance(spans, list):
            raise InputError(f"{where}: {key!r}: expected a list of [start, end] pairs")
        ws: list[Window] = []
        for i, span in enumerate(spans):
            at = f"{where}: {key!r}[{i}]"
            if not isinstance(span, list | tuple) or len(span) != 2:
                raise InputError(f"{at}: expected [start, end], found {span!r}")
            a, b = parse_time(span[0], at), parse_time(span[1], at)
            if b < a:
                raise InputError(f"{at}: end {span[1]!r} is before start {span[0]!r}")
            ws.append((a, b))
        out[str(key)] = sorted(ws)
    return out


def windows_from_flags(times: np.ndarray, flags: np.ndarray) -> list[Window]:
    """Runs of consecutive true ``flags`` (one stream, in time order) -> [first, last] times."""
    f = np.asarray(flags, bool)
    if not f.any():
        return []
    edges = np.diff(np.r_[0, f.astype(np.int8), 0])
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(float(times[a]), float(times[b])) for a, b in zip(starts, ends, strict=True)]


def match_label_keys(
    stream_keys: Sequence[str], windows: Mapping[str, list[Window]]
) -> dict[str, list[Window]]:
    """Windows per stream key; a label key also matches by file name (``x.csv`` -> ``x``).

    NAB's windows.json is keyed by file name while a file without a key column
    is one stream named after the file without its suffix.
    """
    by_name = {stream_name_for(k): v for k, v in windows.items()}
    out: dict[str, list[Window]] = {}
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
