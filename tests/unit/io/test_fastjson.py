"""The batch decoder (compiled scanner + fallback) equals the general decoder, record
by record, on seeded mixes of valid and garbage records: the same keys, times and
features bit for bit, the same partitions, offsets and positions, the same reject
reasons and details."""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np
import orjson
import pytest

from streamlstm.io import decode as decode_mod
from streamlstm.io.decode import DecodeConfig, Decoder
from streamlstm.io.fastjson import FlatPlan
from streamlstm.io.features import FeatureSpec
from streamlstm.io.records import RecordColumns
from streamlstm.kernels import jsonscan as KJ


class Rec(NamedTuple):
    key: bytes | None
    value: bytes | None
    timestamp: int
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]


GOOD_NUMBERS = [
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1",
    "-1",
    "21.37",
    "1013.25",
    "0.05",
    "-0.125",
    "1E5",
    "1e-7",
    "2.5e3",
    "123456789012345",
    "0.000123",
    "9.999",
    "60.1234",
    "1e22",
    "1e-22",
    "7.0e+2",
    "100",
    "4.2",
    "-17.5",
    "0.30000000000000004",
    "60.123456789012345",
    "-1.2345678901234567e-5",
    "123456789.123456789",
]
ODD_NUMBERS = [
    "9007199254740993",
    "12345678901234567890",
    "-9223372036854775809",
    "99999999999999999999",
    "1e-310",
    "1e400",
    "-1e400",
    "1e-400",
    "12345678901234567890123",
    "1234567890123456",
    "2.4703282292062328e-324",
    "1.7976931348623157e308",
    "1e23",
    "123456789.123456789",
    "5e-324",
    "1e300",
    "1e13",
    "1e12",
    "-1e12",
]
BAD_NUMBERS = ["01", "+1", ".5", "1.", "-", "1e", "1e+", "--1", "0x10", "1.5.2", "1e5e5"]
NON_NUMBERS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "true",
    "false",
    "null",
    '"x"',
    '"12"',
    "[1]",
    '{"a": 1}',
    "[]",
    "{}",
]
STRINGS = [
    '"a"',
    '"pump-7"',
    '"s-001"',
    '"machine 12"',
    '"\\u00e9t\\u00e9"',
    '"a\\nb"',
    '"\\"q\\""',
    '"机器"',
    '"é"',
    '"x\\ud800"',
    '""',
    '"' + "k" * 300 + '"',
    '"' + "k" * 256 + '"',
    "12",
    "-3",
    "0",
    "null",
    "true",
    "1.5",
    '["a"]',
    '{"id": "a"}',
]
EXTRA = [
    '"note": "hello"',
    '"nested": {"a": [1, 2, {"b": null}]}',
    '"arr": [1, 2.5, "x"]',
    '"big": 1e400',
    '"nan": NaN',
    '"flag": true',
    '"\\u0074emp2": 3',
    '"clé": "v"',
    '"机": 1',
    '"esc": "a\\tb\\u0041"',
    '"n": null',
    '"z": -0',
    '"long": 12345678901234567890',
]
WS = ["", " ", "  ", "\n", "\t", "\r\n", " \n\t "]
GARBAGE = [
    b"garbage",
    b"",
    b"{",
    b"}",
    b"[1, 2]",
    b"3",
    b'"str"',
    b"null",
    b'{"id": "a",}',
    b"{'id': 'a'}",
    b'{"id": "a" "ts": 1}',
    b"\xff\xfe{}",
    b'{"id": "\xff"}',
    b'{"id": "\xc3\xa9", "ts": 100, "temp": 1}',
    b"{}",
    b'  {"id":"a"}  x',
    b"\x00",
    b'{"id": "a", "ts": 1}{}',
    b'\xef\xbb\xbf{"id": "a", "ts": 100, "temp": 1.0}',
]


def _value(pool_weights: list[tuple[list[str], float]], rng: random.Random) -> str:
    pools, weights = zip(*pool_weights, strict=True)
    return rng.choice(rng.choices(pools, weights)[0])


def make_records(n: int, seed: int, numeric: list[str], key: str | None, tfield: str | None,
                 garbage: float = 0.25) -> list[Rec]:  # fmt: skip
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kafka_key = (
            rng.choice([b"k1", b"k2", None, b"\xff\xfe", b"", "strkey"])
            if rng.random() < 0.3
            else f"dev-{i % 17}".encode()
        )
        if rng.random() < garbage / 3:
            value = rng.choice(GARBAGE + [None])
        else:
            members = []
            clean = rng.random() > garbage
            if key is not None and (clean or rng.random() > 0.1):
                k = f'"dev-{rng.randrange(50)}"' if clean else _value([(STRINGS, 1.0)], rng)
                members.append(f'"{key}": {k}')
            if tfield is not None and (clean or rng.random() > 0.1):
                t = str(rng.randrange(1_600_000_000, 1_800_000_000))
                if not clean:
                    t = rng.choice(
                        [
                            t,
                            t + "000",
                            "-5",
                            "null",
                            '"2024-01-01"',
                            "1e30",
                            t + ".25",
                            "NaN",
                            "8e9",
                        ]
                    )
                members.append(f'"{tfield}": {t}')
            for f in numeric:
                if clean:
                    members.append(f'"{f}": {rng.choice(GOOD_NUMBERS)}')
                elif rng.random() > 0.1:
                    v = _value(
                        [
                            (GOOD_NUMBERS, 3.0),
                            (ODD_NUMBERS, 1.0),
                            (BAD_NUMBERS, 0.3),
                            (NON_NUMBERS, 1.0),
                        ],
                        rng,
                    )
                    members.append(f'"{f}": {v}')
                    if rng.random() < 0.05:
                        members.append(f'"{f}": {rng.choice(GOOD_NUMBERS)}')  # a duplicate
            for _ in range(rng.randrange(0, 3) if not clean or rng.random() < garbage else 0):
                members.append(rng.choice(EXTRA))
            rng.shuffle(members)
            w = lambda: rng.choice(WS)  # noqa: E731
            body = ",".join(f"{w()}{m}{w()}" for m in members)
            value = f"{w()}{{{body}}}{w()}".encode("utf-8", "surrogatepass")
        out.append(Rec(kafka_key, value, 1_700_000_000_000 + i if rng.random() > 0.02 else -1,  # type: ignore[arg-type]
                       i % 3, 1000 + i, []))  # fmt: skip
    return out


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.keys == b.keys
    for name in ("times", "x", "partitions", "offsets", "index"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name
    assert a.rejects == b.rejects


CONFIGS = {
    "fields": (
        DecodeConfig(
            key_field="id",
            time_field="ts",
            features=(
                FeatureSpec("temp"),
                FeatureSpec("pressure", transform="log", min=0.0, max=2000.0),
                FeatureSpec("flow", default=0.0),
            ),
        ),  # fmt: skip
        ["temp", "pressure", "flow"],
        "id",
        "ts",
    ),
    "kafka_key_and_time": (
        DecodeConfig(features=(FeatureSpec("temp"), FeatureSpec("hour", transform="time_of_day"))),
        ["temp"],
        None,
        None,
    ),
    "ms_and_small_range": (
        DecodeConfig(
            key_field="id",
            time_field="ts",
            time_unit="ms",
            max_value=1e3,
            max_key_length=8,
            features=(FeatureSpec("temp", min=-20.0, max=100.0),),
        ),  # fmt: skip
        ["temp"],
        "id",
        "ts",
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_decoder_equals_the_general_one(
    name: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scan every batch, however much of it the scanner leaves (the point is the merge).
    monkeypatch.setattr(decode_mod, "FLAT_MIN_SHARE", 0.0)
    cfg, numeric, key, tfield = CONFIGS[name]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    assert dec._flat is not None
    recs = make_records(600, seed, numeric, key, tfield)
    if name == "ms_and_small_range":
        # Times in milliseconds (a seconds value is then "before 1970", bad_time).
        ms = [r.value.replace(b'"ts": 1', b'"ts": 1000') if r.value else r.value for r in recs]
        recs = [r._replace(value=v) for r, v in zip(recs, ms, strict=True)]
    fast, ref = dec.decode(recs), dec.decode_exact(recs)
    _same(fast, ref)
    # Both paths carry a real share of the batch.
    scanned = dec._flat.scan([r.value for r in recs])[2]  # type: ignore[union-attr]
    assert 0.3 * len(recs) < scanned.sum() < 0.95 * len(recs)
    # The mix exercises both paths and most reject reasons.
    assert 0.2 * len(recs) < len(fast) < 0.9 * len(recs)
    assert len(fast.reject_counts()) >= 4, fast.reject_counts()
    # And record by record: each alone, through either path, gives the same.
    for r in recs[:150]:
        _same(dec.decode([r] * 8), dec.decode_exact([r] * 8))


def test_clean_records_take_the_scanner() -> None:
    cfg, numeric, key, tfield = CONFIGS["fields"]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    recs = make_records(200, 5, numeric, key, tfield, garbage=0.0)
    recs = [r for r in recs if r.value is not None]
    vals, spans, ok, _ = dec._flat.scan([r.value for r in recs])  # type: ignore[union-attr]
    assert ok.all()
    _same(dec.decode(recs), dec.decode_exact(recs))


def test_every_prefix_and_one_byte_change_of_a_record_decodes_as_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scanner's grammar walk, byte by byte: each prefix of a few valid records and
    each of them with one byte replaced by a structural or odd byte is read exactly as
    the general decoder reads it (or left to it), in the daemon's columns form."""
    monkeypatch.setattr(decode_mod, "FLAT_MIN_SHARE", 0.0)
    cfg, numeric, key, tfield = CONFIGS["fields"]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    bases = [
        b'{"id":"dev-1","ts":1700000000,"temp":21.5,"pressure":3.25,"flow":-0.5,"note":"x"}',
        b' { "id" : "d" , "ts" : 1700000001.5e0 ,\t"temp": null, "flag": false,'
        b' "pressure": 1E2 , "flow": 0 }\n',
        b'{"flow":1,"temp":2,"pressure":3,"ts":1700000002,"id":"k","z":true,"n":null}',
    ]
    odd = b'"{}[],: \\0a-.e\x00\xff\t'
    values = []
    for b in bases:
        values += [b[:k] for k in range(len(b) + 1)]
        values += [b[:k] + bytes([c]) + b[k + 1 :] for k in range(len(b)) for c in odd]
    recs = [Rec(None, v, 1_700_000_000_000, 0, i, []) for i, v in enumerate(values)]
    ok = dec._flat.scan(values)[2]  # type: ignore[union-attr]
    assert 0.1 * len(values) < ok.sum() < 0.9 * len(values)  # both paths carry a share
    cols = RecordColumns.from_records("t", 0, recs)
    _same(dec.decode(cols), dec.decode_exact(recs))


def test_seventy_fields_and_a_late_one_given_twice() -> None:
    """More wanted fields than a machine word has bits: each is read once, and a record
    giving the 67th twice is left to the general decoder (the last one wins there)."""
    names = [f"c{j}" for j in range(70)]
    cfg = DecodeConfig(key_field="id", time_field="ts", features=tuple(map(FeatureSpec, names)))
    dec = Decoder(cfg, tuple(names))
    assert dec._flat is not None
    body = ", ".join(f'"{n}": {j}.5' for j, n in enumerate(names))
    good = f'{{"id": "a", "ts": 1700000000, {body}}}'.encode()
    twice = f'{{"id": "b", "ts": 1700000000, {body}, "c66": 1}}'.encode()
    recs = [Rec(None, v, 0, 0, i, []) for i, v in enumerate([good, twice] * 8)]
    ok = dec._flat.scan([r.value for r in recs])[2]  # type: ignore[union-attr]
    assert ok.tolist() == [True, False] * 8
    fast = dec.decode(recs)
    _same(fast, dec.decode_exact(recs))
    assert fast.x[1, 66] == 1.0 and fast.x[0, 66] == 66.5


def test_configs_the_scanner_cannot_serve_take_the_general_path() -> None:
    for cfg in (
        DecodeConfig(key_field="a.id", features=(FeatureSpec("temp"),)),
        DecodeConfig(time_field="ts", time_unit="iso", features=(FeatureSpec("temp"),)),
        DecodeConfig(features=(FeatureSpec("m", transform="onehot", vocabulary=("x",)),)),
        DecodeConfig(key_field="temp", features=(FeatureSpec("temp"),)),
    ):
        names = tuple(n for s in cfg.features for n in s.names)
        assert Decoder(cfg, names)._flat is None


def test_a_batch_the_scanner_mostly_leaves_skips_it_for_a_while() -> None:
    cfg, numeric, key, tfield = CONFIGS["fields"]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    full = [
        Rec(None, f'{{"id": "a", "ts": 1700000000, "temp": {i}, "x": [1]}}'.encode(), 0, 0, i, [])
        for i in range(50)
    ]
    _same(dec.decode(full), dec.decode_exact(full))
    assert dec._flat_skip == decode_mod.FLAT_SKIP_BATCHES
    _same(dec.decode(full), dec.decode_exact(full))
    assert dec._flat_skip == decode_mod.FLAT_SKIP_BATCHES - 1


def _number_texts(n: int, seed: int) -> list[str]:
    """Seeded JSON numbers: float reprs across the range, random decimals of 1-20
    digits with exponents, and integers next to halfway points between doubles."""
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            out.append(repr(float(gen.standard_normal() * 10.0 ** rng.randint(-40, 40))))
            continue
        if kind < 0.7:
            nd = rng.randint(1, 20)
            d = str(rng.randrange(10 ** (nd - 1), 10**nd))
            cut = rng.randint(0, nd)
            t = (d[:cut] + ("." + d[cut:] if cut < nd else "")) if cut else "0." + d
            t += f"e{rng.randint(-330, 310)}" if rng.random() < 0.5 else ""
        else:
            k = rng.randint(54, 63)
            t = str((1 << k) + rng.choice([1, -1, 3, 1 << (k - 53), (1 << (k - 53)) + 1]))
            t = f"{t}e{rng.randint(-25, 25)}" if rng.random() < 0.5 else t
        out.append("-" + t if rng.random() < 0.3 else t)
    return out


def test_scanned_numbers_are_orjsons_to_the_bit() -> None:
    """Clinger's path and Eisel-Lemire give the correctly rounded double, as orjson and
    numpy do; what the scanner does not convert, it leaves."""
    plan = FlatPlan(("v",), (KJ.NUMBER,), None, None, {"v": 0})
    texts = _number_texts(40_000, 11)
    values = [f'{{"v": {t}}}'.encode() for t in texts]
    got, _, ok, _ = plan.scan(values)
    assert 0.7 * len(texts) < ok.sum() < len(texts)
    ref = np.array([float(orjson.loads(values[i])["v"]) for i in np.flatnonzero(ok)])
    mism = [texts[i] for i, a, b in zip(np.flatnonzero(ok), got[ok, 0], ref, strict=True)
            if a.tobytes() != b.tobytes()]  # fmt: skip
    assert not mism, mism[:5]


def test_long_and_similar_field_names() -> None:
    """Names of 64 bytes and more, and names that differ in their last byte only."""
    long = "f" * 70
    cfg = DecodeConfig(
        key_field="id", time_field="ts", features=(FeatureSpec("a", field=long), FeatureSpec("b"))
    )
    dec = Decoder(cfg, ("a", "b"))
    recs = [
        Rec(
            None,
            f'{{"id": "s", "ts": 1700000000, "{long}": {i}, "{long[:-1]}g": 7, "b": 2,'
            f' "c": 3}}'.encode(),
            0,
            0,
            i,
            [],
        )  # fmt: skip
        for i in range(20)
    ]
    got = dec.decode(recs)
    _same(got, dec.decode_exact(recs))
    assert got.x[:, 0].tolist() == list(range(20)) and dec._flat_skip == 0


def test_odd_kafka_timestamps_take_the_general_path() -> None:
    cfg, numeric, key, tfield = CONFIGS["kafka_key_and_time"]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    base = Rec(b"k", b'{"temp": 1.5}', 1_700_000_000_000, 0, 0, [])
    for odd in (True, None, "1700000000000", 1.7e12, -1):
        recs = [base._replace(offset=i) for i in range(10)] + [base._replace(timestamp=odd)]
        _same(dec.decode(recs), dec.decode_exact(recs))


def test_the_decode_benchmark_runs_as_the_readme_shows_it() -> None:
    # README: python benchmarks/bench_decode.py --digits 4 (here with few records)
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    cmd = [sys.executable, "benchmarks/bench_decode.py", "--digits", "4"]
    r = subprocess.run(
        [*cmd, "--n", "4000", "--repeat", "1"], cwd=root, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "decode" in r.stdout


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1])
def test_columns_decode_equals_the_general_one(
    name: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's form (a poll's columns over one buffer) decodes as the objects do."""
    monkeypatch.setattr(decode_mod, "FLAT_MIN_SHARE", 0.0)
    cfg, numeric, key, tfield = CONFIGS[name]
    dec = Decoder(cfg, tuple(n for s in cfg.features for n in s.names))
    recs = [
        r._replace(partition=2, key=r.key.encode() if isinstance(r.key, str) else r.key)
        for r in make_records(600, seed, numeric, key, tfield)
    ]
    cols = RecordColumns.from_records("t", 2, recs)
    fast, ref = dec.decode(cols), dec.decode_exact(recs)
    _same(fast, ref)
    assert 0.2 * len(recs) < len(fast) < 0.9 * len(recs)
    small = RecordColumns.from_records("t", 2, recs[:5])  # below FLAT_MIN_BATCH
    _same(dec.decode(small), dec.decode_exact(recs[:5]))
