"""Feature extraction: raw field values -> the model's feature matrix, one implementation.

The daemon (JSON records from Kafka, via :mod:`streamlstm.io.decode`) and training
(CSV/JSONL history) both turn raw values into model inputs here, so a model is
always fed exactly what it was trained on.

A :class:`FeatureSpec` names one input and how to transform it; a
:class:`FeatureSet` expands the specs into model feature names and transforms
columns of raw values in bulk (numpy, with one C-level type scan per column, so
the per-record Python cost stays small).

Transforms and the model feature names they produce:

=============  =================================  =========================================
transform      names                              value
=============  =================================  =========================================
none           ``<name>``                         the number as is
log            ``<name>``                         ``ln(1 + x)``; needs ``x >= 0`` (amounts)
onehot         ``<name>=<v>`` per vocabulary      1.0 in the value's column, else 0.0;
               entry, then ``<name>=<other>``     values outside the vocabulary go to other
hash           ``<name>#0`` .. ``#<buckets-1>``   1.0 in column ``crc32(value) % buckets``
time_of_day    ``<name>_sin``, ``<name>_cos``     the event time's position in the day
day_of_week    ``<name>_sin``, ``<name>_cos``     the event time's position in the week
                                                  (0 = Monday 00:00)
=============  =================================  =========================================

Rules, per value:

- missing (absent field or JSON ``null``): NaN in every column of the feature
  (the detector imputes), or ``default`` if the spec sets one;
- numbers for none/log must be int or float (``bool`` and numeric strings are a
  ``wrong_type``), finite (``non_finite``), at most ``max_value`` in magnitude
  and inside ``[min, max]`` when set (``out_of_range``);
- onehot/hash values must be strings or integers (integers are matched as their
  decimal text, so merchant category ``5411`` and ``"5411"`` are the same);
- time features come from the event time (seconds since the Unix epoch, UTC),
  shifted by ``utc_offset_h`` hours to get local wall-clock time.

Roles (``role``): a **scored** feature is forecast and judged (its errors make
the anomaly score); a **context** feature is an input only (a command channel,
the calendar, a category): the model reads it, nothing alerts on it.
``auto`` (the default) scores none/log features and keeps onehot, hash and the
time transforms as context; a model file may also name context features (see
:func:`context_names`).

"Time since the stream's previous event" is not a transform: a model trained
with ``time_input`` gets it from the detector, which knows each stream's last
event time.

>>> fs = FeatureSet((FeatureSpec("amount", transform="log"),
...                  FeatureSpec("mcc", transform="onehot", vocabulary=("food", "fuel"))))
>>> fs.names
('amount', 'mcc=food', 'mcc=fuel', 'mcc=<other>')
>>> x, why = fs.transform({"amount": [0.0, "x"], "mcc": ["fuel", "toys"]}, np.zeros(2))
>>> x[0].tolist(), why.tolist()
([0.0, 0.0, 1.0, 0.0], [None, 'wrong_type:amount'])

Length: one transform table (FeatureSpec, FeatureSet, the roles) that the daemon and
training must share line for line; half of it is validation with the YAML key each error
names.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TRANSFORMS = ("none", "log", "onehot", "hash", "time_of_day", "day_of_week")
TIME_TRANSFORMS = frozenset({"time_of_day", "day_of_week"})
NUMERIC_TRANSFORMS = frozenset({"none", "log"})
ROLES = ("auto", "scored", "context")
OTHER = "<other>"
DEFAULT_MAX_VALUE = 1e12
# Names end up in model files, metric help and alert records; keep them plain and free of the
# "=" and "#" that the expanded onehot/hash names use as separators.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_FIELD_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
# 1970-01-01 was a Thursday: shift so that phase 0 of the week is Monday 00:00.
_EPOCH_WEEKDAY_S = 3 * _DAY_S
# A flood of distinct values (one card number per event...) must not grow the hash cache
# without bound; past this many entries it is simply cleared.
_HASH_CACHE_MAX = 100_000
_NUMERIC_TYPES = frozenset({int, float, type(None)})
_CATEGORY_TYPES = frozenset({str, type(None)})


class FeatureSpecError(ValueError):
    """An invalid :class:`FeatureSpec`; ``key`` is the offending YAML key (e.g. ``buckets``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.problem = message


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: where its raw value lives and how to turn it into numbers.

    name: feature name (expanded into model feature names, see the module doc).
    field: dotted path into the JSON object (``"payload.temp"``); defaults to
        ``name``; must be empty ("") for the time transforms, which read the event time.
    transform: one of ``TRANSFORMS``.
    vocabulary: onehot values, in column order.
    buckets: hash columns (>= 2).
    min, max: plausible range of a none/log value; outside is ``out_of_range``.
    default: value used when a none/log value is missing (None = NaN, imputed).
    utc_offset_h: hours added to UTC for the time transforms (local wall clock).
    role: "scored", "context" or "auto" (see the module doc).
    """

    name: str
    field: str | None = None
    transform: str = "none"
    vocabulary: tuple[str, ...] = ()
    buckets: int = 0
    min: float | None = None
    max: float | None = None
    default: float | None = None
    utc_offset_h: float = 0.0
    role: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise FeatureSpecError(
                "name",
                f"{self.name!r} is not a valid feature name "
                "(a letter or _, then letters, digits, _ . -)",
            )
        if self.transform not in TRANSFORMS:
            raise FeatureSpecError(
                "transform", f"{self.transform!r} is not one of {', '.join(TRANSFORMS)}"
            )
        timeish = self.transform in TIME_TRANSFORMS
        if self.field is None:
            object.__setattr__(self, "field", "" if timeish else self.name)
        if timeish:
            if self.field:
                raise FeatureSpecError(
                    "field",
                    f"{self.field!r} given, but {self.transform} reads the event time "
                    "(decode.time_field); remove it",
                )
        elif not isinstance(self.field, str) or not _FIELD_RE.match(self.field):
            raise FeatureSpecError(
                "field", f"{self.field!r} is not a dotted field path like 'payload.temp'"
            )
        if self.role not in ROLES:
            raise FeatureSpecError("role", f"{self.role!r} is not one of {', '.join(ROLES)}")
        self._check_knobs()

    def _check_knobs(self) -> None:
        t = self.transform
        if t == "onehot":
            if not self.vocabulary:
                raise FeatureSpecError("vocabulary", "onehot needs a non-empty vocabulary")
            for v in self.vocabulary:
                if not isinstance(v, str) or not v:
                    raise FeatureSpecError(
                        "vocabulary", f"{v!r} is not a non-empty string (quote it in YAML)"
                    )
            if len(set(self.vocabulary)) != len(self.vocabulary):
                raise FeatureSpecError("vocabulary", f"duplicate values in {list(self.vocabulary)}")
            if OTHER in self.vocabulary:
                raise FeatureSpecError("vocabulary", f"{OTHER!r} is reserved for unknown values")
        elif self.vocabulary:
            raise FeatureSpecError("vocabulary", f"only onehot takes a vocabulary, not {t}")
        if t == "hash":
            if isinstance(self.buckets, bool) or not isinstance(self.buckets, int):
                raise FeatureSpecError("buckets", f"{self.buckets!r} is not an integer")
            if not 2 <= self.buckets <= 4096:
                raise FeatureSpecError("buckets", f"{self.buckets} is not in 2..4096")
        elif self.buckets:
            raise FeatureSpecError("buckets", f"only hash takes buckets, not {t}")
        for knob in ("min", "max", "default"):
            if getattr(self, knob) is not None and t not in NUMERIC_TRANSFORMS:
                raise FeatureSpecError(knob, f"only none and log take {knob}, not {t}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FeatureSpecError("min", f"{self.min} is above max {self.max}")
        if self.utc_offset_h and t not in TIME_TRANSFORMS:
            raise FeatureSpecError("utc_offset_h", f"only time transforms take it, not {t}")
        if not -14.0 <= self.utc_offset_h <= 14.0:
            raise FeatureSpecError("utc_offset_h", f"{self.utc_offset_h} is not in -14..14")
        if t == "log":
            if self.default is not None and self.default < 0:
                raise FeatureSpecError("default", f"{self.default} < 0 cannot be logged")
            if self.min is not None and self.min < 0:
                raise FeatureSpecError("min", f"{self.min} < 0: log needs values >= 0")

    @property
    def names(self) -> tuple[str, ...]:
        """The model feature names this spec expands into."""
        n, t = self.name, self.transform
        if t == "onehot":
            return (*(f"{n}={v}" for v in self.vocabulary), f"{n}={OTHER}")
        if t == "hash":
            return tuple(f"{n}#{i}" for i in range(self.buckets))
        if t in TIME_TRANSFORMS:
            return (f"{n}_sin", f"{n}_cos")
        return (n,)


def context_names(
    specs: Sequence[FeatureSpec], model_context: Sequence[str] = ()
) -> tuple[str, ...]:
    """The model feature names that are context inputs only, in spec order.

    An explicit ``role`` wins; ``auto`` is context when the model file names the
    feature as context or the transform is onehot, hash or a time transform.

    >>> specs = (FeatureSpec("temp"), FeatureSpec("cmd"),
    ...          FeatureSpec("hour", transform="time_of_day"),
    ...          FeatureSpec("valve", role="scored", transform="onehot", vocabulary=("open",)))
    >>> context_names(specs, model_context=("cmd",))
    ('cmd', 'hour_sin', 'hour_cos')
    """
    given = set(model_context)
    out: list[str] = []
    for s in specs:
        if s.role == "scored":
            continue
        if s.role == "context" or s.transform not in NUMERIC_TRANSFORMS:
            out.extend(s.names)
        else:
            out.extend(n for n in s.names if n in given)
    return tuple(out)


class FeatureSet:
    """Specs expanded into model features; transforms raw columns in bulk.

    ``max_value``: numbers larger in magnitude are ``out_of_range`` (a decimal
    point lost upstream, a counter that wrapped), whatever the spec's own range.
    """

    def __init__(self, specs: Sequence[FeatureSpec], max_value: float = DEFAULT_MAX_VALUE) -> None:
        self.specs = tuple(specs)
        if not self.specs:
            raise ValueError("a feature set needs at least one feature")
        seen: set[str] = set()
        for s in self.specs:
            if s.name in seen:
                raise FeatureSpecError("name", f"duplicate feature name {s.name!r}")
            seen.add(s.name)
        self.max_value = float(max_value)
        names: list[str] = []
        self._slices: list[slice] = []
        for s in self.specs:
            self._slices.append(slice(len(names), len(names) + len(s.names)))
            names.extend(s.names)
        if len(set(names)) != len(names):
            raise FeatureSpecError("name", f"expanded feature names collide: {names}")
        self.names: tuple[str, ...] = tuple(names)
        self._onehot = {
            s.name: {v: i for i, v in enumerate(s.vocabulary)}
            for s in self.specs
            if s.transform == "onehot"
        }
        self._hash_cache: dict[str, dict[str, int]] = {
            s.name: {} for s in self.specs if s.transform == "hash"
        }

    @property
    def fields(self) -> tuple[str, ...]:
        """Distinct raw fields read (empty for time-only sets), in spec order."""
        return tuple(dict.fromkeys(s.field for s in self.specs if s.field))

    def __len__(self) -> int:
        return len(self.names)

    def transform(
        self, columns: Mapping[str, Sequence[Any]], times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw columns (by spec name; None = missing) -> ((n, F) float64, (n,) object reasons).

        ``times``: (n,) event times in seconds (for the time transforms). A row's
        reason is None, or ``"<reason>:<field>"`` for the first spec it fails
        (reasons: wrong_type, non_finite, out_of_range); its features are then
        unspecified. A spec without a column (time transforms) need not be given.
        """
        t = np.asarray(times, dtype=np.float64)
        n = t.shape[0]
        x = np.empty((n, len(self.names)), np.float64)
        reasons = np.full(n, None, dtype=object)
        for spec, sl in zip(self.specs, self._slices, strict=True):
            if spec.transform in TIME_TRANSFORMS:
                self._time(spec, t, x[:, sl])
                continue
            col = columns[spec.name]
            if len(col) != n:
                raise ValueError(f"column {spec.name!r} has {len(col)} values, expected {n}")
            if spec.transform in NUMERIC_TRANSFORMS:
                bad = self._numeric(spec, col, x[:, sl.start])
            else:
                bad = self._category(spec, col, x[:, sl])
            if bad is not None:
                for code, mask in bad:
                    hit = mask & (reasons == None)  # noqa: E711 (element-wise on objects)
                    reasons[hit] = f"{code}:{spec.field}"
        return x, reasons

    # -- per transform -----------------------------------------------------------------
    def _numeric(
        self, spec: FeatureSpec, col: Sequence[Any], out: np.ndarray
    ) -> list[tuple[str, np.ndarray]] | None:
        wrong: np.ndarray | None = None
        if isinstance(col, np.ndarray) and col.dtype.kind in "fiu":
            v = col.astype(np.float64)
        else:
            v = None
            if set(map(type, col)) <= _NUMERIC_TYPES:
                # None -> NaN in one C call; ints beyond 2**53 round, fine for features.
                try:
                    v = np.array(col, dtype=np.float64)
                except OverflowError:  # an int beyond float range: the slow path says so
                    pass
            if v is None:
                v, wrong = _numbers_slow(col)
        bad: list[tuple[str, np.ndarray]] = []
        if wrong is not None:
            bad.append(("wrong_type", wrong))
        missing = np.isnan(v)
        with np.errstate(invalid="ignore"):
            inf = np.isinf(v)
            big = np.abs(v) > self.max_value
            if spec.min is not None:
                big |= v < spec.min
            if spec.max is not None:
                big |= v > spec.max
            if spec.transform == "log":
                big |= v < 0
        if inf.any():
            bad.append(("non_finite", inf))
        if big.any():
            bad.append(("out_of_range", big & ~inf))
        if spec.default is not None:
            v = np.where(missing, spec.default, v)
        if spec.transform == "log":
            with np.errstate(invalid="ignore", divide="ignore"):
                v = np.log1p(v)
        out[:] = v
        return bad or None

    def _category(
        self, spec: FeatureSpec, col: Sequence[Any], out: np.ndarray
    ) -> list[tuple[str, np.ndarray]] | None:
        n = out.shape[0]
        wrong: np.ndarray | None = None
        if not set(map(type, col)) <= _CATEGORY_TYPES:
            vals, wrong = _categories_slow(col)
            col = vals
        if spec.transform == "onehot":
            lookup = self._onehot[spec.name]
            other = len(spec.vocabulary)
            # -1 marks a missing value.
            idx = np.fromiter(
                (-1 if v is None else lookup.get(v, other) for v in col), np.int64, count=n
            )
        else:
            idx = self._hash(spec, col)
        out[:] = 0.0
        have = idx >= 0
        out[np.flatnonzero(have), idx[have]] = 1.0
        out[~have] = np.nan
        if wrong is not None:
            return [("wrong_type", wrong)]
        return None

    def _hash(self, spec: FeatureSpec, col: Sequence[Any]) -> np.ndarray:
        cache = self._hash_cache[spec.name]
        if len(cache) > _HASH_CACHE_MAX:
            cache.clear()
        b = spec.buckets
        out = np.empty(len(col), np.int64)
        for i, v in enumerate(col):
            if v is None:
                out[i] = -1
                continue
            h = cache.get(v)
            if h is None:
                # crc32, not hash(): Python's str hash is salted per process, and a model's
                # buckets must mean the same thing in training and in every replica.
                h = cache[v] = zlib.crc32(v.encode("utf-8", "surrogatepass")) % b
            out[i] = h
        return out

    @staticmethod
    def _time(spec: FeatureSpec, t: np.ndarray, out: np.ndarray) -> None:
        local = t + spec.utc_offset_h * 3600.0
        if spec.transform == "time_of_day":
            phase = np.mod(local, _DAY_S) / _DAY_S
        else:
            phase = np.mod(local + _EPOCH_WEEKDAY_S, _WEEK_S) / _WEEK_S
        ang = 2.0 * np.pi * phase
        out[:, 0] = np.sin(ang)
        out[:, 1] = np.cos(ang)


def _numbers_slow(col: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-value path for a column holding something other than int/float/None."""
    n = len(col)
    v = np.full(n, np.nan)
    wrong = np.zeros(n, bool)
    for i, a in enumerate(col):
        tp = type(a)
        if tp is float or tp is int:
            try:
                v[i] = a
            except OverflowError:  # an int beyond float range
                v[i] = np.inf if a > 0 else -np.inf
        elif a is None:
            pass
        elif isinstance(a, (np.floating, np.integer)):
            v[i] = float(a)
        else:  # bool, str, list, dict, unreachable path marker...
            wrong[i] = True
    return v, wrong


def _categories_slow(col: Sequence[Any]) -> tuple[list[str | None], np.ndarray]:
    vals: list[str | None] = []
    wrong = np.zeros(len(col), bool)
    for i, a in enumerate(col):
        tp = type(a)
        if tp is str or a is None:
            vals.append(a)
        elif tp is int or isinstance(a, np.integer):
            vals.append(str(int(a)))
        else:
            vals.append(None)
            wrong[i] = True
    return vals, wrong
