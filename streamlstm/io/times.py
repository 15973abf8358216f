"""The one epoch-or-ISO-8601 time parser: for the decoder, event files and label files.

ISO-8601 text without a zone is UTC. A text that is not ISO-8601, or a time
outside what ``datetime`` can represent, is None here; each caller turns that
into its own reject reason or error message.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import warnings
from typing import Any

import numpy as np

_ISO_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_seconds(text: str) -> float | None:
    """ISO-8601 text as epoch seconds (no zone = UTC), or None when it is not ISO-8601.

    >>> iso_seconds("1970-01-02T00:00:00Z"), iso_seconds("1970-01-01 00:01:00"), iso_seconds("x")
    (86400.0, 60.0, None)
    """
    try:
        d = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.UTC)
    try:
        return d.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def iso_or_nan(v: Any) -> float:
    """:func:`iso_seconds` of a decoded JSON value; NaN for a non-string or non-ISO value."""
    if type(v) is not str:
        return math.nan
    t = iso_seconds(v)
    return math.nan if t is None else t


def iso_fast(texts: list[str]) -> np.ndarray | None:
    """numpy's datetime64 parser for ISO strings without a zone or with 'Z' (UTC).

    Returns None when any string is something else (an offset, a number, junk);
    the caller then parses row by row and reports the bad row.
    """
    if not texts or not all(_ISO_LIKE.match(s) for s in (texts[0], texts[-1])):
        return None
    # numpy also reads '1714521600' as the year 1714521600 (wrapped to 1775) and
    # '2024' as a year: every string must start like a date, not only the ends.
    if not all(len(s) >= 10 and s[4] == "-" and s[7] == "-" for s in texts):
        return None
    stripped = [s[:-1] if s.endswith("Z") else s for s in texts]
    with warnings.catch_warnings():
        # numpy warns (and will refuse) when a string carries a zone offset.
        warnings.simplefilter("error")
        try:
            d = np.array(stripped, dtype="datetime64[ns]")
        except (ValueError, UserWarning, DeprecationWarning):
            return None
    if np.isnat(d).any():
        return None
    return d.astype(np.int64).astype(np.float64) / 1e9


# Epoch seconds from 1970-01-02 to 1973-03-03: no real event stream's clock, but what
# epoch times in another unit become when divided wrongly (pandas 3 parses datetimes to
# microseconds; `astype("int64") / 1e9` then gives thousands of seconds: 2014 -> 1970-01-17)
_IMPLAUSIBLE_EPOCH = (1e5, 1e8)


def implausible_epoch(times: np.ndarray, unit: str = "s") -> str | None:
    """A warning when numeric event times, read as epoch ``unit``, all fall between
    1970-01-02 and 1973-03-03 (None otherwise, and for times starting near 0: relative
    time is fine).

    >>> implausible_epoch(np.array([1404677.4, 1404677.7])) is not None
    True
    >>> implausible_epoch(np.array([1404677400.0, 1404677700.0])), implausible_epoch(np.arange(9.0))
    (None, None)
    """
    t = np.asarray(times, np.float64)
    t = t[np.isfinite(t)]
    if t.size == 0:
        return None
    lo, hi = float(t.min()), float(t.max())
    if not (_IMPLAUSIBLE_EPOCH[0] <= lo and hi < _IMPLAUSIBLE_EPOCH[1]):
        return None
    day = _dt.datetime.fromtimestamp(lo, _dt.UTC).date().isoformat()
    return (
        f"the event times, read as epoch time in {unit} (--time-unit {unit}), put the events "
        f"on {day} and the days after: epoch times in another unit? (pandas 3 datetimes are "
        "microseconds, so `astype('int64') / 1e9` gives thousands of seconds: export seconds, "
        "or give --time-unit ms/us/ns for those); the scorer's time-of-day memory and the "
        "calibration's days read this clock. Times counted from some start are fine"
    )
