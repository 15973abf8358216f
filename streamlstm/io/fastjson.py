"""Decode by batch: flat JSON records -> arrays without a Python object per field.

:class:`FlatPlan` says which top-level fields a decode config reads and scans a
batch of record values with the compiled scanner of
:mod:`streamlstm.kernels.jsonscan`: per record, the number fields as float64,
the span of the key string, and whether the record is one the scanner reads
exactly. The :class:`~streamlstm.io.decode.Decoder` sends every other record
(unicode or escapes, nested values, 19-digit numbers, NaN, garbage...) and
every record some check rejects to its general path, so reject reasons,
details and dead-letter records are the general path's by construction, and a
test holds the two paths equal record by record.

A config gets no plan (everything takes the general path) when it reads a
dotted path, ISO times, or an onehot/hash feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamlstm.kernels import jsonscan as KJ


class FlatPlan:
    """The top-level fields to read: ``names`` (ASCII), ``kinds`` (KJ.STRING/NUMBER);
    ``key_col`` / ``time_col`` their columns (None: from the Kafka record), ``feature_cols``
    spec name -> column of each none/log feature."""

    def __init__(
        self,
        names: tuple[str, ...],
        kinds: tuple[int, ...],
        key_col: int | None,
        time_col: int | None,
        feature_cols: dict[str, int],
    ) -> None:
        self.names = names
        self.kinds = kinds
        self.key_col = key_col
        self.time_col = time_col
        self.feature_cols = feature_cols
        encoded = [n.encode("ascii") for n in names]
        self._foffs = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=self._foffs[1:])
        self._fbuf = np.frombuffer(b"".join(encoded) or b"\0", np.uint8)
        self._fkind = np.array(kinds, np.int8)

    @staticmethod
    def for_config(
        key_field: str | None,
        time_field: str | None,
        time_unit: str,
        features: Sequence[tuple[str, str, str]],
    ) -> FlatPlan | None:
        """A plan for the config, or None when the scanner cannot serve it.

        features: (spec name, field, transform) of every feature spec.
        """
        if time_unit == "iso":
            return None
        cols: dict[str, tuple[int, int]] = {}

        def col(name: str, kind: int) -> int | None:
            if not _plain(name):
                return None
            if name in cols:
                c, k = cols[name]
                return c if k == kind else None
            cols[name] = (len(cols), kind)
            return len(cols) - 1

        key_col = time_col = None
        if key_field is not None and (key_col := col(key_field, KJ.STRING)) is None:
            return None
        if time_field is not None and (time_col := col(time_field, KJ.NUMBER)) is None:
            return None
        feature_cols: dict[str, int] = {}
        for name, field, transform in features:
            if transform in ("time_of_day", "day_of_week"):
                continue
            if transform not in ("none", "log"):
                return None
            c = col(field, KJ.NUMBER)
            if c is None:
                return None
            feature_cols[name] = c
        names = tuple(cols)
        kinds = tuple(cols[n][1] for n in names)
        return FlatPlan(names, kinds, key_col, time_col, feature_cols)

    def scan(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        """(vals (n, m) float64, spans (n, 2) int64, ok (n,) bool, the joined bytes)."""
        n = len(values)
        try:
            data = b"".join(values)
            lens = np.fromiter(map(len, values), np.int64, n)
        except TypeError:  # a tombstone (None) or a str: the general path says what it is
            data = b"".join(v if type(v) is bytes else b"" for v in values)
            lens = np.fromiter((len(v) if type(v) is bytes else -1 for v in values), np.int64, n)
        offs = np.zeros(n + 1, np.int64)
        np.cumsum(np.maximum(lens, 0), out=offs[1:])
        ends = offs[1:].copy()
        ends[lens < 0] = -1  # not bytes: not the scanner's
        vals, spans, ok = self.scan_spans(data, offs[:-1], ends)
        return vals, spans, ok, data

    def scan_spans(
        self, data: bytes, starts: np.ndarray, ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scan the values ``data[starts[i]:ends[i]]`` where they lie (``ends[i] < 0``:
        not bytes): (vals (n, m) float64, spans (n, 2) int64 into ``data``, ok (n,) bool)."""
        n = starts.shape[0]
        buf = np.frombuffer(data or b"\0", np.uint8)
        m = len(self.names)
        vals = np.empty((n, m), np.float64)
        spans = np.empty((n, 2), np.int64)
        ok = np.empty(n, np.bool_)
        KJ._scan(
            buf, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(ends, np.int64),
            self._fbuf, self._foffs, self._fkind, vals, spans, ok,
        )  # fmt: skip
        return vals, spans, ok

    @staticmethod
    def strings(data: bytes, starts: np.ndarray, lens: np.ndarray) -> list[str]:
        """The strings ``data[starts[i]:starts[i] + lens[i]]`` of spans the scanner returned
        (ASCII, no control character), as str.

        Their bytes are joined with a 0 byte between them (none of them holds one) and
        split in one C call: a slice object and a string per span cost ~8x as much.

        >>> FlatPlan.strings(b'{"k":"ab","j":""}', np.array([6, 15]), np.array([2, 0]))
        ['ab', '']
        """
        if starts.shape[0] == 0:
            return []
        buf = np.frombuffer(data or b"\0", np.uint8)
        joined = KJ._join_spans(
            buf, np.ascontiguousarray(starts, np.int64), np.ascontiguousarray(lens, np.int64)
        )
        return joined.tobytes().decode("latin-1").split("\0")


def _plain(name: str) -> bool:
    """A top-level field the scanner can match byte for byte (no escapes needed)."""
    return (
        bool(name)
        and "." not in name
        and name.isascii()
        and all(c >= " " and c not in '"\\' for c in name)
    )
