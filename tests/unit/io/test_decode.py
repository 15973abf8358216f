"""streamlstm.io.decode: good records, every kind of garbage, and good records around it."""

from __future__ import annotations

import json
import math
import random
from typing import Any, NamedTuple

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.errors import ConfigError
from streamlstm.io.decode import REASONS, DecodeConfig, Decoder
from streamlstm.io.features import FeatureSpec

FEATURES = ("temp", "pressure")
T0 = 1_700_000_000.0


class Rec(NamedTuple):
    """The attributes of kafka-python's ConsumerRecord that the decoder reads."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    partition: int = 0
    offset: int = 0
    headers: list[Any] = []


def sensor(key: str = "s1", ts: Any = T0, temp: Any = 20.0, pressure: Any = 3.0) -> bytes:
    return orjson.dumps({"sensor": key, "ts": ts, "temp": temp, "pressure": pressure})


def records(values: list[bytes | None], partition: int = 0, first_offset: int = 100) -> list[Rec]:
    return [
        Rec(
            key=None,
            value=v,
            timestamp=int(T0 * 1000),
            partition=partition,
            offset=first_offset + i,
        )
        for i, v in enumerate(values)
    ]


def decoder(**kw: Any) -> Decoder:
    cfg = dict(
        key_field="sensor",
        time_field="ts",
        features=(FeatureSpec("temp"), FeatureSpec("pressure")),
    )
    cfg.update(kw)
    return Decoder(DecodeConfig(**cfg), FEATURES)


def test_good_records_decode_to_arrays() -> None:
    recs = records([sensor("a", T0, 1.5, 2.5), sensor("b", T0 + 1, -3, 7)], partition=3)
    b = decoder().decode(recs)
    assert b.keys == ["a", "b"]
    assert b.times.dtype == np.float64 and b.times.tolist() == [T0, T0 + 1]
    assert b.x.shape == (2, 2) and b.x.dtype == np.float64
    assert b.x.tolist() == [[1.5, 2.5], [-3.0, 7.0]]
    assert b.partitions.dtype == np.int32 and b.partitions.tolist() == [3, 3]
    assert b.offsets.dtype == np.int64 and b.offsets.tolist() == [100, 101]
    assert b.index.tolist() == [0, 1]
    assert b.rejects == []


def test_empty_batch() -> None:
    b = decoder().decode([])
    assert len(b) == 0 and b.x.shape == (0, 2) and b.rejects == []


def test_missing_and_null_features_are_nan_not_rejects() -> None:
    recs = records(
        [
            orjson.dumps({"sensor": "a", "ts": T0, "temp": None}),  # pressure absent, temp null
            orjson.dumps({"sensor": "a", "ts": T0 + 1}),  # every feature missing: decodes fine
        ]
    )
    b = decoder().decode(recs)
    assert b.rejects == []
    assert np.isnan(b.x).all()


def test_kafka_key_and_timestamp_when_no_fields_configured() -> None:
    recs = [
        Rec(key=b"dev-1", value=b'{"temp": 1, "pressure": 2}', timestamp=1_700_000_000_500),
        Rec(key=b"\xff\xfe", value=b'{"temp": 1, "pressure": 2}', timestamp=1_700_000_001_000),
        Rec(key=None, value=b'{"temp": 1, "pressure": 2}', timestamp=1_700_000_001_000, offset=9),
        Rec(key=b"dev-1", value=b'{"temp": 1, "pressure": 2}', timestamp=-1, offset=10),
    ]
    b = decoder(key_field=None, time_field=None).decode(recs)
    assert b.keys == ["dev-1", "\\xff\\xfe"]  # undecodable bytes are escaped, not rejected
    assert b.times.tolist() == [1_700_000_000.5, 1_700_000_001.0]
    assert [(r.offset, r.reason) for r in b.rejects] == [(9, "missing_key"), (10, "missing_time")]


def test_nested_paths_and_integer_keys() -> None:
    dec = Decoder(
        DecodeConfig(
            key_field="device.id",
            time_field="meta.ts",
            time_unit="ms",
            features=(FeatureSpec("temp", field="readings.temp"),),
        ),
        ("temp",),
    )
    recs = records(
        [
            orjson.dumps(
                {"device": {"id": 42}, "meta": {"ts": 1_700_000_000_250}, "readings": {"temp": 5}}
            ),
            orjson.dumps({"device": {"id": "x"}, "meta": {"ts": 1_700_000_000_000}, "readings": 7}),
            orjson.dumps({"device": {"id": "y"}, "meta": {"ts": 1_700_000_000_000}}),
        ]
    )
    b = dec.decode(recs)
    assert b.keys == ["42", "y"]
    assert b.times.tolist() == [1_700_000_000.25, 1_700_000_000.0]
    assert b.x[0, 0] == 5.0 and math.isnan(b.x[1, 0])  # absent parent = missing value
    (rej,) = b.rejects
    assert (rej.index, rej.reason) == (1, "wrong_type")
    assert "readings.temp" in rej.detail and "readings is not an object" in rej.detail


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)])
def test_numeric_time_units(unit: str, scale: int) -> None:
    ts = T0 + 0.5 if scale == 1 else int(T0) * scale + scale // 2  # exact in each unit
    b = decoder(time_unit=unit).decode(records([sensor(ts=ts)]))
    assert b.times.tolist() == [T0 + 0.5] and b.rejects == []


def test_iso_times() -> None:
    dec = decoder(time_unit="iso")
    recs = records(
        [
            sensor(ts="2023-11-14T22:13:20Z"),
            sensor(ts="2023-11-14T23:13:20+01:00"),
            sensor(ts="2023-11-14 22:13:20.5"),  # no offset: UTC
            sensor(ts="yesterday"),
            sensor(ts=1_700_000_000),
        ]
    )
    b = dec.decode(recs)
    assert b.times.tolist() == [T0, T0, T0 + 0.5]
    assert [(r.index, r.reason) for r in b.rejects] == [(3, "bad_time"), (4, "bad_time")]
    assert "'yesterday'" in b.rejects[0].detail
    assert "ISO 8601" in b.rejects[1].detail


# -- garbage ------------------------------------------------------------------------------
GARBAGE: list[tuple[bytes | None, str, str]] = [
    # (value, reason, a piece of the detail)
    (b"\x00\x9f\x92\x96 binary", "not_json", ""),
    (b"", "not_json", "empty"),
    (None, "not_json", "tombstone"),
    (b'{"sensor": "a", "ts": 1', "not_json", ""),
    (b"[1, 2, 3]", "not_object", "array"),
    (b'"just a string"', "not_object", "string"),
    (b"42", "not_object", "number"),
    (b"null", "not_object", "null"),
    (orjson.dumps({"ts": T0, "temp": 1}), "missing_key", "'sensor'"),
    (orjson.dumps({"sensor": None, "ts": T0}), "missing_key", "null"),
    (orjson.dumps({"sensor": "", "ts": T0}), "missing_key", "empty"),
    (orjson.dumps({"sensor": ["a"], "ts": T0}), "wrong_type", "array"),
    (orjson.dumps({"sensor": 1.5, "ts": T0}), "wrong_type", "number"),
    (orjson.dumps({"sensor": "k" * 300, "ts": T0}), "out_of_range", "max_key_length"),
    (orjson.dumps({"sensor": "a", "temp": 1}), "missing_time", "'ts'"),
    (orjson.dumps({"sensor": "a", "ts": None}), "missing_time", "null"),
    (sensor(ts="1700000000"), "bad_time", "time_unit: iso"),
    (sensor(ts=True), "bad_time", "boolean"),
    (sensor(ts=-5), "bad_time", "before 1970"),
    (sensor(ts=T0 * 1000), "bad_time", "time_unit: ms"),
    (sensor(ts=int(T0) * 10**9), "bad_time", "time_unit: ns"),
    (sensor(ts=1e300), "bad_time", "after 2200"),
    (sensor(temp="hot"), "wrong_type", "temp: string 'hot'"),
    (sensor(temp=True), "wrong_type", "boolean"),
    (sensor(pressure={"v": 1}), "wrong_type", "pressure"),
    (sensor(pressure=[1.0]), "wrong_type", "pressure"),
    (b'{"sensor": "a", "ts": 1700000000, "temp": NaN, "pressure": 1}', "non_finite", "temp: NaN"),
    (
        b'{"sensor": "a", "ts": 1700000000, "temp": 1, "pressure": -Infinity}',
        "non_finite",
        "pressure: -Infinity",
    ),
    (
        b'{"sensor": "a", "ts": 1700000000, "temp": 1e400, "pressure": 1}',
        "non_finite",
        "temp: Infinity",
    ),
    (sensor(temp=1e13), "out_of_range", "temp"),
    (
        b'{"sensor": "a", "ts": 1700000000, "temp": 1, "pressure": -99999999999999999999999}',
        "out_of_range",
        "pressure",
    ),
    (sensor(temp=2**64 - 1), "out_of_range", "temp"),
]


@pytest.mark.parametrize(("value", "reason", "detail"), GARBAGE)
def test_garbage_gets_its_reason_and_neighbours_still_decode(
    value: bytes | None, reason: str, detail: str
) -> None:
    assert reason in REASONS
    recs = records([sensor("before", T0, 1.0, 2.0), value, sensor("after", T0 + 1, 3.0, 4.0)])
    b = decoder().decode(recs)
    assert b.keys == ["before", "after"]
    assert b.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert b.index.tolist() == [0, 2] and b.offsets.tolist() == [100, 102]
    assert len(b.rejects) == 1
    rej = b.rejects[0]
    assert (rej.index, rej.partition, rej.offset, rej.reason) == (1, 0, 101, reason)
    assert detail in rej.detail, rej.detail
    assert len(rej.detail) <= 200


def test_range_rejects_name_the_yaml_keys_to_change() -> None:
    dec = Decoder(
        DecodeConfig(key_field="sensor", time_field="ts",
                     features=(FeatureSpec("temp", max=250), FeatureSpec("pressure", min=0))),
        ("temp", "pressure"),
    )  # fmt: skip
    b = dec.decode(records([sensor(temp=300.0), sensor(pressure=-1.0), sensor(temp=2e13)]))
    details = [r.detail for r in b.rejects]
    assert "decode.features[0].min/max" in details[0]
    assert "decode.features[1].min/max" in details[1]
    assert "decode.max_value" in details[2]


def test_first_problem_wins() -> None:
    # A record with no key, a bad time and a bad feature is reported once, for its key.
    b = decoder().decode(records([orjson.dumps({"ts": "x", "temp": "y"})]))
    assert [r.reason for r in b.rejects] == ["missing_key"]


def test_stdlib_json_nan_is_non_finite_but_valid_json_with_escapes_is_fine() -> None:
    ok = json.dumps({"sensor": "caf\u00e9 \u2603", "ts": T0, "temp": 1, "pressure": 2}).encode()
    nan = json.dumps({"sensor": "a", "ts": T0, "temp": float("nan"), "pressure": 2}).encode()
    surrogate = b'{"sensor": "\\ud800", "ts": 1700000000, "temp": 1, "pressure": 2}'
    b = decoder().decode(records([ok, nan, surrogate]))
    assert b.keys == ["caf\u00e9 \u2603"]
    assert [(r.index, r.reason) for r in b.rejects] == [(1, "non_finite"), (2, "not_json")]


def test_non_finite_literal_in_a_field_not_read_does_no_harm() -> None:
    value = b'{"sensor": "a", "ts": 1700000000, "temp": 1, "pressure": 2, "status": NaN}'
    nan_time = b'{"sensor": "a", "ts": NaN, "temp": 1, "pressure": 2}'
    nan_key = b'{"sensor": NaN, "ts": 1700000000, "temp": 1, "pressure": 2}'
    b = decoder().decode(records([value, nan_time, nan_key]))
    assert b.keys == ["a"] and b.x.tolist() == [[1.0, 2.0]]
    assert [(r.index, r.reason) for r in b.rejects] == [(1, "bad_time"), (2, "wrong_type")]


def test_random_garbage_never_raises_and_keeps_every_good_record() -> None:
    rng = random.Random(1234)
    values: list[bytes | None] = []
    good_idx = []
    for i in range(2000):
        r = rng.random()
        if r < 0.5:
            values.append(sensor(f"s{i % 7}", T0 + i, float(i), 1.0))
            good_idx.append(i)
        elif r < 0.8:
            values.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40))))
        else:
            good = bytearray(sensor(f"s{i}", T0 + i, 1.0, 2.0))
            for _ in range(rng.randrange(1, 4)):  # corrupt a few bytes of a good record
                good[rng.randrange(len(good))] = rng.getrandbits(8)
            values.append(bytes(good))
    b = decoder().decode(records(values, first_offset=0))
    assert len(b) + len(b.rejects) == len(values)
    assert set(good_idx) <= set(b.index.tolist())
    assert sorted(b.index.tolist() + [r.index for r in b.rejects]) == list(range(len(values)))
    assert {r.reason for r in b.rejects} <= set(REASONS)
    assert np.isfinite(b.times).all()


def test_feature_mismatch_with_the_model_is_a_config_error() -> None:
    cfg = DecodeConfig(features=(FeatureSpec("temp"), FeatureSpec("pressure")))
    with pytest.raises(ConfigError, match=r"decode.features: .*missing: flow; extra: pressure"):
        Decoder(cfg, ("temp", "flow"))
    with pytest.raises(ConfigError, match="different order"):
        Decoder(cfg, ("pressure", "temp"))


def test_transforms_run_inside_decode() -> None:
    dec = Decoder(
        DecodeConfig(
            key_field="card",
            time_field="ts",
            features=(
                FeatureSpec("amount", transform="log"),
                FeatureSpec("mcc", transform="onehot", vocabulary=("5411", "5812")),
            ),
        ),
        ("amount", "mcc=5411", "mcc=5812", "mcc=<other>"),
    )
    recs = records(
        [
            orjson.dumps({"card": "c", "ts": T0, "amount": math.e - 1, "mcc": 5812}),
            orjson.dumps({"card": "c", "ts": T0, "amount": -3.0, "mcc": "5411"}),
        ]
    )
    b = dec.decode(recs)
    assert b.x.tolist() == [[pytest.approx(1.0), 0.0, 1.0, 0.0]]
    assert [(r.index, r.reason) for r in b.rejects] == [(1, "out_of_range")]


POOL = [sensor("a", T0, 1.0, 2.0), sensor("b", T0 + 5, None, 3.5)] + [g[0] for g in GARBAGE]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, len(POOL) - 1), max_size=40), st.integers(0, 40))
def test_decoding_in_parts_equals_decoding_at_once(picks: list[int], cut: int) -> None:
    """Batch boundaries change nothing: the daemon's micro-batches are arbitrary."""
    recs = records([POOL[i] for i in picks], first_offset=0)
    dec = decoder()
    whole = dec.decode(recs)
    cut = min(cut, len(recs))
    a, b = dec.decode(recs[:cut]), dec.decode(recs[cut:])
    assert whole.keys == a.keys + b.keys
    np.testing.assert_array_equal(whole.times, np.concatenate([a.times, b.times]))
    np.testing.assert_array_equal(whole.x, np.concatenate([a.x, b.x]))
    np.testing.assert_array_equal(whole.offsets, np.concatenate([a.offsets, b.offsets]))
    assert whole.index.tolist() == a.index.tolist() + [i + cut for i in b.index.tolist()]
    shifted = [(r.index + cut, r.reason, r.detail) for r in b.rejects]
    assert [(r.index, r.reason, r.detail) for r in whole.rejects] == [
        (r.index, r.reason, r.detail) for r in a.rejects
    ] + shifted
