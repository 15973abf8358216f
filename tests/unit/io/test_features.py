"""streamlstm.io.features: names, every transform, reasons, and batch invariance."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.io import features as F
from streamlstm.io.features import FeatureSet, FeatureSpec, FeatureSpecError

MONDAY = 1_699_833_600.0  # 2023-11-13T00:00:00Z, a Monday
HOUR = 3600.0


def one(spec: FeatureSpec, values: list[Any], times: Any = None, **kw: Any) -> tuple[Any, Any]:
    fs = FeatureSet((spec,), **kw)
    t = np.full(len(values), MONDAY) if times is None else np.asarray(times, float)
    return fs.transform({spec.name: values}, t)


def test_names_of_every_transform() -> None:
    fs = FeatureSet(
        (
            FeatureSpec("temp"),
            FeatureSpec("amount", transform="log"),
            FeatureSpec("mcc", transform="onehot", vocabulary=("5411", "5812")),
            FeatureSpec("site", transform="hash", buckets=3),
            FeatureSpec("hour", transform="time_of_day"),
            FeatureSpec("wd", transform="day_of_week"),
        )
    )
    assert fs.names == (
        "temp", "amount", "mcc=5411", "mcc=5812", "mcc=<other>", "site#0", "site#1", "site#2",
        "hour_sin", "hour_cos", "wd_sin", "wd_cos",
    )  # fmt: skip
    assert len(fs) == 12
    assert fs.fields == ("temp", "amount", "mcc", "site")


def test_none_transform_numbers_missing_and_wrong_types() -> None:
    x, why = one(FeatureSpec("v", field="a.b"), [1, 2.5, None, True, "3", [1], {"a": 1}])
    assert x[:3, 0].tolist()[:2] == [1.0, 2.5] and math.isnan(x[2, 0])
    assert why.tolist() == [None, None, None] + ["wrong_type:a.b"] * 4


def test_numpy_columns_take_the_fast_path() -> None:
    x, why = one(FeatureSpec("v"), np.array([1, 2, 3], np.int32))
    assert x[:, 0].tolist() == [1.0, 2.0, 3.0] and why.tolist() == [None] * 3


def test_non_finite_and_out_of_range() -> None:
    x, why = one(FeatureSpec("v", min=-10, max=10), [5, 11, -11, float("inf"), 10**400, 1e13])
    assert why.tolist() == [
        None, "out_of_range:v", "out_of_range:v", "non_finite:v", "non_finite:v", "out_of_range:v"
    ]  # fmt: skip
    _, why = one(FeatureSpec("v"), [1e12, -1e12, 1.0000001e12], max_value=1e12)
    assert why.tolist() == [None, None, "out_of_range:v"]


def test_log_and_defaults() -> None:
    x, why = one(FeatureSpec("amt", transform="log", default=0.0), [0, math.e - 1, None, -1])
    assert x[:3, 0].tolist() == pytest.approx([0.0, 1.0, 0.0])  # missing -> default -> log1p(0)
    assert why.tolist() == [None, None, None, "out_of_range:amt"]
    x, _ = one(FeatureSpec("amt", transform="log"), [None])
    assert math.isnan(x[0, 0])  # no default: missing stays missing


def test_onehot() -> None:
    spec = FeatureSpec("c", transform="onehot", vocabulary=("a", "b", "5411"))
    x, why = one(spec, ["b", "zzz", None, 5411, True, 1.5, "a"])
    assert x[0].tolist() == [0, 1, 0, 0]
    assert x[1].tolist() == [0, 0, 0, 1]  # unknown -> <other>
    assert np.isnan(x[2]).all()  # missing -> all NaN, imputed downstream
    assert x[3].tolist() == [0, 0, 1, 0]  # integer codes match their text
    assert x[6].tolist() == [1, 0, 0, 0]
    assert why.tolist() == [None] * 4 + ["wrong_type:c"] * 2 + [None]


def test_hash_is_stable_crc32_and_one_hot() -> None:
    spec = FeatureSpec("m", transform="hash", buckets=7)
    vals = ["FR", "DE", "US", "FR", None, 42]
    x, why = one(spec, vals)
    assert why.tolist() == [None] * 6
    for row, v in zip(x, vals, strict=True):
        if v is None:
            assert np.isnan(row).all()
        else:
            expect = zlib.crc32(str(v).encode()) % 7  # the same in every process and replica
            assert row.tolist() == [1.0 if i == expect else 0.0 for i in range(7)]
    assert x[0].tolist() == x[3].tolist()


def test_hash_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "_HASH_CACHE_MAX", 50)
    fs = FeatureSet((FeatureSpec("m", transform="hash", buckets=4),))
    for k in range(5):
        fs.transform({"m": [f"v{k}-{i}" for i in range(40)]}, np.zeros(40))
    assert len(fs._hash_cache["m"]) <= 90


def test_time_of_day_and_day_of_week() -> None:
    tod = FeatureSpec("h", transform="time_of_day")
    x, _ = one(tod, [None, None, None], times=[MONDAY, MONDAY + 6 * HOUR, MONDAY + 18 * HOUR])
    np.testing.assert_allclose(x, [[0, 1], [1, 0], [-1, 0]], atol=1e-12)
    local = FeatureSpec("h", transform="time_of_day", utc_offset_h=6)
    x, _ = one(local, [None], times=[MONDAY])  # 00:00 UTC is 06:00 at UTC+6
    np.testing.assert_allclose(x, [[1, 0]], atol=1e-12)
    dow = FeatureSpec("d", transform="day_of_week")
    x, _ = one(dow, [None] * 3, times=[MONDAY, MONDAY + 7 * 24 * HOUR, MONDAY + 3.5 * 24 * HOUR])
    np.testing.assert_allclose(x, [[0, 1], [0, 1], [0, -1]], atol=1e-12)
    # A time-only feature set needs no columns at all.
    fs = FeatureSet((FeatureSpec("h", transform="time_of_day"),))
    x, why = fs.transform({}, np.array([MONDAY]))
    assert x.shape == (1, 2) and why.tolist() == [None]


def test_first_failing_spec_gives_the_reason() -> None:
    fs = FeatureSet((FeatureSpec("a"), FeatureSpec("b")))
    _, why = fs.transform({"a": [1, "x", 1], "b": ["y", "z", 2]}, np.zeros(3))
    assert why.tolist() == ["wrong_type:b", "wrong_type:a", None]


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "a=b"}, "name"),
        ({"name": "x", "transform": "logg"}, "transform"),
        ({"name": "x", "transform": "onehot"}, "vocabulary"),
        ({"name": "x", "transform": "onehot", "vocabulary": ("a", "a")}, "vocabulary"),
        ({"name": "x", "transform": "onehot", "vocabulary": ("<other>",)}, "vocabulary"),
        ({"name": "x", "vocabulary": ("a",)}, "vocabulary"),
        ({"name": "x", "transform": "hash"}, "buckets"),
        ({"name": "x", "buckets": 4}, "buckets"),
        ({"name": "x", "transform": "time_of_day", "field": "ts"}, "field"),
        ({"name": "x", "field": "a..b"}, "field"),
        ({"name": "x", "min": 5, "max": 1}, "min"),
        ({"name": "x", "transform": "log", "min": -1}, "min"),
        ({"name": "x", "transform": "onehot", "vocabulary": ("a",), "default": 1}, "default"),
        ({"name": "x", "utc_offset_h": 2}, "utc_offset_h"),
        ({"name": "x", "transform": "time_of_day", "utc_offset_h": 15}, "utc_offset_h"),
    ],
)
def test_invalid_specs_name_the_key(kw: dict[str, Any], key: str) -> None:
    with pytest.raises(FeatureSpecError) as ei:
        FeatureSpec(**kw)
    assert ei.value.key == key


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(FeatureSpecError, match="duplicate"):
        FeatureSet((FeatureSpec("a"), FeatureSpec("a", field="b")))


VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=False, width=64),
    st.integers(-(10**15), 10**15),
    st.sampled_from(["a", "b", "zz", "5411"]),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(VALUES, VALUES, VALUES), min_size=1, max_size=30), st.integers(0, 30))
def test_batched_equals_row_by_row(rows: list[tuple[Any, Any, Any]], cut: int) -> None:
    fs = FeatureSet(
        (
            FeatureSpec("n", min=-1e9),
            FeatureSpec("c", transform="onehot", vocabulary=("a", "5411")),
            FeatureSpec("h", transform="hash", buckets=5),
            FeatureSpec("t", transform="time_of_day"),
        )
    )
    times = MONDAY + np.arange(len(rows)) * 977.0
    cols = {"n": [r[0] for r in rows], "c": [r[1] for r in rows], "h": [r[2] for r in rows]}
    x, why = fs.transform(cols, times)
    cut = min(cut, len(rows))
    parts = [
        fs.transform({k: v[a:b] for k, v in cols.items()}, times[a:b])
        for a, b in ((0, cut), (cut, len(rows)))
    ]
    np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]))
    assert why.tolist() == [r for p in parts for r in p[1].tolist()]
    ok = why == None  # noqa: E711
    # Every good row has exactly one 1 in each category block (or all NaN when missing).
    for sl in (slice(1, 4), slice(4, 9)):
        block = x[ok, sl]
        sums = block.sum(axis=1)
        assert np.all(np.isnan(sums) | (sums == 1.0))
