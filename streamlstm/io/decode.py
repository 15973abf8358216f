"""Kafka records -> (stream keys, event times, feature matrix), and reasons for the rest.

Decoding is the daemon's largest per-record cost, so it is columnar: one
``orjson.loads`` per record in a list comprehension, then one comprehension per
field and one C-level type scan per column; per-record Python work happens
only for records that turn out to be bad. Every bad record becomes a
:class:`Reject` with a reason from ``REASONS``; it never raises.

Decisions an operator may need to know:

- ``NaN`` / ``Infinity`` literals (which Python's ``json.dumps`` writes) are not
  JSON and orjson refuses them. A record orjson refuses is re-read with the
  standard library (cold path): if such a literal, or a number too large for a
  double like ``1e400``, is all that is wrong, the record is ``non_finite`` when
  a feature holds it, and decodes normally when only a field that is not read
  does. Anything else is ``not_json``.
- A missing or ``null`` feature value decodes to NaN (the detector imputes it or
  rejects an all-missing row as ``missing``); only a present value of the wrong
  type is rejected here.
- Stream keys: a JSON string, or an integer (as its decimal text). From the
  Kafka record key (``key_field: null``): bytes decoded as UTF-8, undecodable
  bytes escaped, never rejected.
- Event times must lie in [1970-01-01, 2200-01-01): a milliseconds value read as
  seconds lands far beyond and is rejected as ``bad_time`` with a hint.
  ISO 8601 times without an offset are taken as UTC.

>>> from types import SimpleNamespace as R
>>> from streamlstm.io.features import FeatureSpec
>>> dec = Decoder(DecodeConfig(key_field="id", time_field="ts",
...                            features=(FeatureSpec("temp"),)), ("temp",))
>>> recs = [R(key=None, value=b'{"id": "a", "ts": 10, "temp": 1.5}', timestamp=0,
...           partition=0, offset=7, headers=[]),
...         R(key=None, value=b'{"id": "a", "ts": 11, "temp": NaN}', timestamp=0,
...           partition=0, offset=8, headers=[])]
>>> b = dec.decode(recs)
>>> b.keys, b.times.tolist(), b.x.tolist(), [(r.offset, r.reason) for r in b.rejects]
(['a'], [10.0], [[1.5]], [(8, 'non_finite')])

Length: the columnar decoder keeps the fast path and every reject reason in one pass
over a batch; a split would walk the batch twice.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from streamlstm.errors import ConfigError
from streamlstm.io.fastjson import FlatPlan
from streamlstm.io.features import DEFAULT_MAX_VALUE, FeatureSet, FeatureSpec
from streamlstm.io.records import RecordColumns
from streamlstm.io.times import iso_or_nan

REASONS = (
    "not_json",
    "not_object",
    "missing_key",
    "missing_time",
    "bad_time",
    "wrong_type",
    "non_finite",
    "out_of_range",
)
TIME_UNITS = ("s", "ms", "us", "ns", "iso")
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
# Plausible event times: before 1970 or from 2200 on is a unit or clock error.
MIN_TIME_S = 0.0
MAX_TIME_S = 7_258_118_400.0  # 2200-01-01T00:00:00Z
# Reject details are forwarded to the dead-letter topic and logs: keep them short.
_DETAIL_MAX = 200
_NUM = frozenset({int, float})
_PARTITION = attrgetter("partition")
_OFFSET = attrgetter("offset")
_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_NOT_JSON = object()  # placeholder for a record orjson refused
_TIMESTAMP = attrgetter("timestamp")
# Below this many records the scanner's fixed cost (a Numba call, the array set-up)
# outweighs what it saves; such batches take the general path.
FLAT_MIN_BATCH = 8
# When the scanner reads less than this share of a batch, the next FLAT_SKIP_BATCHES
# batches skip it (the result is the same either way; only the cost differs).
FLAT_MIN_SHARE = 0.5
FLAT_SKIP_BATCHES = 16


@dataclass(frozen=True)
class DecodeConfig:
    """How records become (key, time, features); the ``decode`` YAML section.

    key_field: dotted JSON path of the stream key; None = the Kafka record key.
    time_field: dotted JSON path of the event time; None = the Kafka record timestamp.
    time_unit: unit of ``time_field``: "s", "ms", "us" or "ns" (numbers since the Unix
        epoch) or "iso" (ISO 8601 text).
    features: what to read and how to transform it (see :mod:`streamlstm.io.features`).
    max_value: numbers larger in magnitude are rejected as ``out_of_range``.
    max_key_length: longer stream keys are rejected as ``out_of_range`` (they
        are held in memory per live stream).
    """

    key_field: str | None = None
    time_field: str | None = None
    time_unit: str = "s"
    features: tuple[FeatureSpec, ...] = ()
    max_value: float = DEFAULT_MAX_VALUE
    max_key_length: int = 256

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit {self.time_unit!r} is not one of {', '.join(TIME_UNITS)}")


@dataclass(frozen=True)
class Reject:
    """A record that could not be decoded; ``index`` is its position in the input list."""

    index: int
    partition: int
    offset: int
    reason: str
    detail: str


@dataclass
class DecodedBatch:
    """The good records of one batch, as arrays, plus the rejects.

    keys: n stream keys; times (n,) float64 seconds; x (n, F) float64 raw
    features in the model's order (NaN = missing); partitions (n,) int32;
    offsets (n,) int64; index (n,) int64 position of each good record in the
    input list (ascending).
    """

    keys: list[str]
    times: np.ndarray
    x: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    index: np.ndarray
    rejects: list[Reject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def reject_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejects:
            out[r.reason] = out.get(r.reason, 0) + 1
        return out


class _BadPath:
    """Marker for a dotted path that runs through a non-object (``{"payload": 3}``)."""

    __slots__ = ("at",)

    def __init__(self, at: str) -> None:
        self.at = at

    def __repr__(self) -> str:
        return f"<{self.at} is not an object>"


def _dig(parts: tuple[str, ...], o: Any) -> Any:
    """Value at the path ``parts`` in ``o`` (None if absent), or a :class:`_BadPath`."""
    for i, k in enumerate(parts):
        if o is None:
            return None
        if type(o) is not dict:
            return _BadPath(".".join(parts[:i]))
        o = o.get(k)
    return o


def _column(objs: list[dict[str, Any]], parts: tuple[str, ...]) -> list[Any]:
    """The values at a dotted path in every object, None where absent.

    The fast path is all C: ``map(dict.get, ...)`` level by level, with ``{}`` standing
    in for an absent parent. A parent that is present but not an object (``null``, a
    number, a list) makes ``dict.get`` raise TypeError, and the slow path sorts it out.
    """
    if len(parts) == 1:
        return list(map(dict.get, objs, repeat(parts[0])))
    try:
        level: Any = objs
        for k in parts[:-1]:
            level = map(dict.get, level, repeat(k), repeat(_EMPTY))
        return list(map(dict.get, level, repeat(parts[-1])))
    except TypeError:
        return [_dig(parts, o) for o in objs]


_EMPTY: dict[str, Any] = {}


class Decoder:
    """Decodes batches of Kafka records for a model with features ``features``.

    Raises :class:`ConfigError` at construction if the decode section does not
    produce exactly the model's features, in order.
    """

    def __init__(self, decode: DecodeConfig, features: Sequence[str]) -> None:
        self.config = decode
        self.featureset = FeatureSet(decode.features, max_value=decode.max_value)
        got, want = self.featureset.names, tuple(features)
        if got != want:
            missing = [f for f in want if f not in got]
            extra = [f for f in got if f not in want]
            hint = ""
            if missing or extra:
                hint = f" (missing: {', '.join(missing) or '-'}; extra: {', '.join(extra) or '-'})"
            elif got != want:
                hint = " (same names, different order)"
            raise ConfigError(
                f"decode.features: give features {', '.join(got)} but the model expects "
                f"{', '.join(want)}{hint}; make the features section match the model it was "
                "trained with"
            )
        self.n_features = len(got)
        self._key = tuple(decode.key_field.split(".")) if decode.key_field else None
        self._time = tuple(decode.time_field.split(".")) if decode.time_field else None
        self._cols = [(s.name, tuple(s.field.split("."))) for s in decode.features if s.field]
        self._spec_of = {s.field: s for s in reversed(decode.features) if s.field}
        self._flat_skip = 0
        self._flat = FlatPlan.for_config(
            decode.key_field,
            decode.time_field,
            decode.time_unit,
            [(s.name, s.field or "", s.transform) for s in decode.features],
        )

    def _feature_problem(self, spec: FeatureSpec, code: str, v: Any) -> str:
        numeric = spec.transform in ("none", "log")
        if code == "wrong_type":
            return f"{_show(v)}, expected {'a number' if numeric else 'a string or an integer'}"
        if code == "non_finite":
            return f"{v!r} is not finite"
        if isinstance(v, (int, float)) and abs(v) > self.config.max_value:
            return f"{_show(v)} is beyond decode.max_value {self.config.max_value:g}"
        if spec.transform == "log" and isinstance(v, (int, float)) and v < 0:
            return f"{_show(v)} is negative; transform log needs values >= 0"
        lo = "-inf" if spec.min is None else f"{spec.min:g}"
        hi = "inf" if spec.max is None else f"{spec.max:g}"
        at = f"decode.features[{self.config.features.index(spec)}]"
        return f"{_show(v)} is outside [{lo}, {hi}] ({at}.min/max, feature {spec.name})"

    def _non_finite(
        self,
        lenient: list[int],
        idx: list[int],
        columns: dict[str, list[Any]],
        reason: dict[int, tuple[str, str]],
    ) -> None:
        """Reject records whose features hold NaN/Infinity; such a literal in a field
        that is not read does no harm, and the record decodes."""
        for i in lenient:
            j = bisect_left(idx, i)
            if j == len(idx) or idx[j] != i or j in reason:
                continue
            for spec in self.config.features:
                v = columns[spec.name][j] if spec.field else None
                if type(v) is float and not math.isfinite(v):
                    text = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
                    reason[j] = ("non_finite", f"{spec.field}: {text} is not a finite number")
                    break

    # -- the hot path ------------------------------------------------------------------
    def decode(self, records: Sequence[Any] | RecordColumns) -> DecodedBatch:
        """Decode ``records``: the columns of one partition's poll
        (:class:`~streamlstm.io.records.RecordColumns`, the daemon's form) or objects
        with key, value, timestamp, partition, offset (tests, offline tools).

        Flat JSON records go through the compiled scanner (:mod:`streamlstm.io.fastjson`),
        which reads columns' values where they lie in the fetched buffer; every record
        it does not read exactly, or that a check rejects, becomes an object and goes
        through :meth:`decode_exact`. The result is :meth:`decode_exact`'s, bit for bit.
        """
        view: _View = (
            _ColumnsView(records) if isinstance(records, RecordColumns) else _ListView(records)
        )
        n = len(view)
        if self._flat is None or n < FLAT_MIN_BATCH or self._flat_skip > 0:
            if self._flat is not None and n >= FLAT_MIN_BATCH:
                self._flat_skip -= 1
            return self.decode_exact(view.records(range(n)))
        return self._decode_flat(view, self._flat)

    def _decode_flat(self, view: _View, plan: FlatPlan) -> DecodedBatch:
        n = len(view)
        vals, spans, ok, data = view.scan(plan)
        if np.count_nonzero(ok) < FLAT_MIN_SHARE * n:
            # A topic the scanner mostly leaves (full-precision floats, nested
            # objects): stop paying for the scan for a while.
            self._flat_skip = FLAT_SKIP_BATCHES
            return self.decode_exact(view.records(range(n)))
        cfg = self.config
        if plan.time_col is None:
            ms = view.timestamps()
            if ms is None:  # a bool or None timestamp: as _times reads them, or not at all
                return self.decode_exact(view.records(range(n)))
            t = ms / _PER_SECOND["ms"]
        else:
            t = vals[:, plan.time_col]
            if cfg.time_unit != "s":
                t = t / _PER_SECOND[cfg.time_unit]
        with np.errstate(invalid="ignore"):
            ok &= (t >= MIN_TIME_S) & (t < MAX_TIME_S)
        rows = np.flatnonzero(ok)
        if plan.key_col is None:
            raw = view.keys(rows.tolist())
            if set(map(type, raw)) <= {bytes}:
                keys = [k.decode("utf-8", "backslashreplace") for k in raw]
            else:
                keys = [_kafka_key(k) or "" for k in raw]
            key_len = np.fromiter(map(len, keys), np.int64, count=len(keys))
        else:
            # The scanner accepted only ASCII: latin-1 maps each byte to one character,
            # and a key's length in characters is its length in bytes. Only the bytes
            # the keys lie in are decoded (the buffer may be a whole fetch).
            # The scanner accepted only ASCII: latin-1 maps each byte to one character,
            # and a key's length in characters is its length in bytes.
            key_len = spans[rows, 1]
            present = key_len >= 0  # an absent key has span (-1, -1): the empty string
            key_len = np.where(present, key_len, 0)
            keys = plan.strings(data, np.where(present, spans[rows, 0], 0), key_len)
        maxlen = cfg.max_key_length
        key_ok = (key_len > 0) & (key_len <= maxlen)
        times = t[rows]
        columns = {name: vals[rows, c] for name, c in plan.feature_cols.items()}
        x, why = self.featureset.transform(columns, times)
        fine = key_ok & (why == None)  # noqa: E711 (element-wise on objects)
        if not fine.all():
            keep = np.flatnonzero(fine)
            keys = [keys[j] for j in keep.tolist()]
            rows, times, x = rows[keep], times[keep], x[keep]
            ok[:] = False
            ok[rows] = True
        partitions, offsets = view.partitions_offsets(rows)
        fast = DecodedBatch(
            keys=keys,
            times=np.ascontiguousarray(times, np.float64),
            x=np.ascontiguousarray(x),
            partitions=partitions,
            offsets=offsets,
            index=rows.astype(np.int64),
        )
        if rows.shape[0] == n:
            return fast
        rest = np.flatnonzero(~ok)
        slow = self.decode_exact(view.records(rest.tolist()))
        return _merge(fast, slow, rest)

    def decode_exact(self, records: Sequence[Any]) -> DecodedBatch:
        """The general decoder (orjson, one Python object per field): the reference
        :meth:`decode` equals, and its path for the records the scanner leaves."""
        rejects: list[Reject] = []
        lenient: list[int] = []
        objs, idx = self._parse(records, rejects, lenient)
        m = len(objs)
        good = [records[i] for i in idx] if len(idx) != len(records) else list(records)
        # Row -> (reason, detail) of its first problem; rows of good records never get one.
        reason: dict[int, tuple[str, str]] = {}

        keys = self._keys(objs, good, reason)
        times = self._times(objs, good, reason)
        columns = {name: _column(objs, parts) for name, parts in self._cols}
        if lenient:
            self._non_finite(lenient, idx, columns, reason)
        x, why = self.featureset.transform(columns, np.nan_to_num(times, nan=0.0))
        bad_rows = np.flatnonzero(why != None)  # noqa: E711 (element-wise on objects)
        for j in bad_rows.tolist():
            if j not in reason:
                code, _, fld = why[j].partition(":")
                spec = self._spec_of[fld]
                problem = self._feature_problem(spec, code, columns[spec.name][j])
                reason[j] = (code, f"{fld}: {problem}")

        idx_a = np.asarray(idx, np.int64)
        if reason:
            for j, (code, detail) in reason.items():
                rejects.append(_reject(idx[j], good[j], code, detail))
            rejects.sort(key=lambda r: r.index)
            ok = np.ones(m, bool)
            ok[list(reason)] = False
            keep = np.flatnonzero(ok)
            keep_l = keep.tolist()
            keys = [keys[j] for j in keep_l]
            times, x = times[keep], x[keep]
            good = [good[j] for j in keep_l]
            idx_a = idx_a[keep]
        n = len(good)
        return DecodedBatch(
            keys=keys,
            times=np.ascontiguousarray(times, np.float64),
            x=np.ascontiguousarray(x),
            partitions=np.fromiter(map(_PARTITION, good), np.int32, count=n),
            offsets=np.fromiter(map(_OFFSET, good), np.int64, count=n),
            index=idx_a,
            rejects=rejects,
        )

    def _parse(
        self, records: Sequence[Any], rejects: list[Reject], lenient: list[int]
    ) -> tuple[list[Any], list[int]]:
        """JSON objects of the parseable records and their positions; positions of the
        records holding non-finite numbers are appended to ``lenient``."""
        values = list(map(_VALUE, records))
        objs: list[Any] = []
        n = len(values)
        # list.extend keeps what an iterator yielded before it raised, and the shared
        # iterator has moved past the bad value: so after a bad record len(objs) is its
        # position; mark it and resume after it, all at C speed.
        it = iter(values)
        while len(objs) < n:
            try:
                objs.extend(map(orjson.loads, it))
            except orjson.JSONDecodeError as exc:
                i = len(objs)
                obj, why = _reparse(values[i], exc)
                objs.append(obj)
                if obj is _NOT_JSON:
                    rejects.append(_reject(i, records[i], "not_json", why))
                else:
                    lenient.append(i)
        if set(map(type, objs)) <= {dict}:
            return objs, list(range(n))
        keep_i = [i for i, o in enumerate(objs) if type(o) is dict]
        keep_o = [objs[i] for i in keep_i]
        if len(keep_i) + len(rejects) < n:
            for i, o in enumerate(objs):
                if type(o) is not dict and o is not _NOT_JSON:
                    detail = f"a JSON {_json_type(o)}, expected an object"
                    rejects.append(_reject(i, records[i], "not_object", detail))
        rejects.sort(key=lambda r: r.index)
        return keep_o, keep_i

    def _keys(
        self, objs: list[Any], recs: list[Any], reason: dict[int, tuple[str, str]]
    ) -> list[str]:
        maxlen = self.config.max_key_length
        if self._key is None:
            raw = list(map(_KEY, recs))
            where = "Kafka record key"
            if set(map(type, raw)) <= {bytes}:
                keys = [k.decode("utf-8", "backslashreplace") for k in raw]
            else:
                keys = [_kafka_key(k) for k in raw]
        else:
            keys = _column(objs, self._key)
            where = f"key field {self.config.key_field!r}"
        if not set(map(type, keys)) <= {str}:
            for j, k in enumerate(keys):
                if type(k) is str:
                    continue
                if type(k) is int:
                    keys[j] = str(k)
                    continue
                if k is None:
                    reason[j] = ("missing_key", f"{where} is missing or null")
                else:
                    reason[j] = ("wrong_type", f"{where}: {_show(k)}, expected a string")
                keys[j] = "?"
        if keys:
            lengths = list(map(len, keys))
            if min(lengths) == 0 or max(lengths) > maxlen:
                for j, n in enumerate(lengths):
                    if j in reason:
                        continue
                    if n == 0:
                        reason[j] = ("missing_key", f"{where} is empty")
                    elif n > maxlen:
                        reason[j] = (
                            "out_of_range",
                            f"{where} has {n} characters, more than decode.max_key_length {maxlen}",
                        )
        return keys

    def _times(
        self, objs: list[Any], recs: list[Any], reason: dict[int, tuple[str, str]]
    ) -> np.ndarray:
        m = len(objs)
        unit = self.config.time_unit
        if self._time is None:
            raw = list(map(_TIMESTAMP, recs))
            where, unit = "Kafka record timestamp", "ms"
        else:
            raw = _column(objs, self._time)
            where = f"time field {self.config.time_field!r}"
        if unit == "iso":
            t = np.fromiter(map(iso_or_nan, raw), np.float64, count=m)
        elif set(map(type, raw)) <= _NUM:
            t = np.array(raw, dtype=np.float64)
        else:
            t = np.full(m, np.nan)
            for j, v in enumerate(raw):
                if type(v) in _NUM:
                    t[j] = float(v)
        if unit != "iso" and unit != "s":
            t = t / _PER_SECOND[unit]
        with np.errstate(invalid="ignore"):
            fine = (t >= MIN_TIME_S) & (t < MAX_TIME_S)
        if fine.all():
            return t
        for j in np.flatnonzero(~fine).tolist():
            if j in reason:
                continue
            v = raw[j]
            if v is None or (self._time is None and v == -1):
                reason[j] = ("missing_time", f"{where} is missing or null")
            else:
                reason[j] = ("bad_time", f"{where}: {_time_problem(v, unit)}")
        return t


class _View:
    """What the scanner path reads of a batch, whichever form it came in."""

    def __len__(self) -> int:
        raise NotImplementedError

    def scan(self, plan: FlatPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        raise NotImplementedError

    def timestamps(self) -> np.ndarray | None:
        """Kafka timestamps (ms) as float64, or None when one is not a number."""
        raise NotImplementedError

    def keys(self, rows: list[int]) -> list[Any]:
        raise NotImplementedError

    def partitions_offsets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def records(self, rows: Any) -> list[Any]:
        raise NotImplementedError


class _ColumnsView(_View):
    """A poll's columns: values scanned in place, objects only for ``records(rows)``."""

    def __init__(self, cols: RecordColumns) -> None:
        self.c = cols

    def __len__(self) -> int:
        return len(self.c)

    def scan(self, plan: FlatPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        v = self.c.values
        starts = np.ascontiguousarray(v[:, 0])
        ends = np.where(v[:, 1] >= 0, starts + v[:, 1], -1)  # null: not the scanner's
        vals, spans, ok = plan.scan_spans(self.c.data, starts, ends)
        return vals, spans, ok, self.c.data

    def timestamps(self) -> np.ndarray | None:
        return self.c.timestamps.astype(np.float64)

    def keys(self, rows: list[int]) -> list[Any]:
        return list(map(self.c.key, rows))

    def partitions_offsets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(rows.shape[0], self.c.partition, np.int32), self.c.offsets[rows]

    def records(self, rows: Any) -> list[Any]:
        return self.c.take(rows)


class _ListView(_View):
    """Record objects (tests, offline tools)."""

    def __init__(self, records: Sequence[Any]) -> None:
        self.r = records

    def __len__(self) -> int:
        return len(self.r)

    def scan(self, plan: FlatPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, bytes]:
        return plan.scan(list(map(_VALUE, self.r)))

    def timestamps(self) -> np.ndarray | None:
        stamps = list(map(_TIMESTAMP, self.r))
        if not set(map(type, stamps)) <= _NUM:
            return None
        return np.array(stamps, dtype=np.float64)

    def keys(self, rows: list[int]) -> list[Any]:
        return [self.r[i].key for i in rows]

    def partitions_offsets(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = rows.shape[0]
        good = list(self.r) if m == len(self.r) else [self.r[i] for i in rows.tolist()]
        return (
            np.fromiter(map(_PARTITION, good), np.int32, count=m),
            np.fromiter(map(_OFFSET, good), np.int64, count=m),
        )

    def records(self, rows: Any) -> list[Any]:
        if isinstance(rows, range) and len(rows) == len(self.r):
            return list(self.r)
        return [self.r[i] for i in rows]


# -- helpers (cold paths) ---------------------------------------------------------------
def _merge(fast: DecodedBatch, slow: DecodedBatch, rest: np.ndarray) -> DecodedBatch:
    """One batch from the scanner's rows and the general path's (decoded from
    ``records[rest]``), in input order."""
    slow_index = rest[slow.index]
    index = np.concatenate((fast.index, slow_index))
    order = np.argsort(index, kind="stable")
    keys = fast.keys + slow.keys
    return DecodedBatch(
        keys=[keys[j] for j in order.tolist()],
        times=np.concatenate((fast.times, slow.times))[order],
        x=np.concatenate((fast.x, slow.x))[order],
        partitions=np.concatenate((fast.partitions, slow.partitions))[order],
        offsets=np.concatenate((fast.offsets, slow.offsets))[order],
        index=index[order],
        rejects=[replace(r, index=int(rest[r.index])) for r in slow.rejects],
    )


def _reject(i: int, rec: Any, reason: str, detail: str) -> Reject:
    return Reject(int(i), int(rec.partition), int(rec.offset), reason, detail[:_DETAIL_MAX])


def _reparse(value: Any, exc: Exception) -> tuple[Any, str]:
    """A record orjson refused: (the object, "") if it is JSON apart from non-finite
    numbers (NaN, Infinity, 1e400; the standard library reads those), else
    (``_NOT_JSON``, why not)."""
    if value is None:
        return _NOT_JSON, "no value (a tombstone)"
    if not isinstance(value, (bytes, bytearray, memoryview, str)):
        return _NOT_JSON, f"value is a {type(value).__name__}, not bytes"
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if b"NaN" not in raw and b"Infinity" not in raw and "infinity" not in str(exc):
        return _NOT_JSON, str(exc)  # cheap exit for plain garbage
    found: list[str] = []

    def constant(name: str) -> float:
        found.append(name)
        return float(name.replace("Infinity", "inf"))

    def big(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            found.append(text)
        return v

    try:
        obj = json.loads(
            raw,
            parse_constant=constant,
            parse_float=big,
        )
    except (ValueError, RecursionError):
        return _NOT_JSON, str(exc)
    # Anything else orjson refuses but the standard library takes (lone surrogates...) is
    # still not JSON we accept.
    return (obj, "") if found else (_NOT_JSON, str(exc))


def _json_type(o: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return "boolean" if type(o) is bool else kinds.get(type(o), "null")


def _show(v: Any) -> str:
    if isinstance(v, _BadPath):
        return repr(v)
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_json_type(v)} {text}"


def _kafka_key(k: Any) -> str | None:
    if k is None:
        return None
    if isinstance(k, (bytes, bytearray, memoryview)):
        return bytes(k).decode("utf-8", "backslashreplace")
    return str(k)


def _time_problem(v: Any, unit: str) -> str:
    if isinstance(v, _BadPath) or type(v) not in (_NUM | {str}):
        want = "ISO 8601 text" if unit == "iso" else f"a number of {unit}"
        return f"{_show(v)}, expected {want}"
    if unit == "iso":
        if type(v) is not str:
            return f"{_show(v)}, expected ISO 8601 text"
        return f"{_show(v)} is not an ISO 8601 time in 1970..2199"
    if type(v) is str:
        return f"{_show(v)}, expected a number of {unit} (or time_unit: iso)"
    t = float(v) / _PER_SECOND[unit]
    if not math.isfinite(t):
        return f"{v!r} is not finite"
    if t >= MAX_TIME_S:
        hint = ""
        for other, per in _PER_SECOND.items():
            if per > _PER_SECOND[unit] and MIN_TIME_S < t * _PER_SECOND[unit] / per < MAX_TIME_S:
                hint = f" (in {other}? set time_unit: {other})"
                break
        return f"{v!r} {unit} is after 2200-01-01{hint}"
    return f"{v!r} {unit} is before 1970-01-01"
