"""Event file readers: CSV / JSON-lines / gzip, times, missing and bad cells, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlstm.errors import InputError
from streamlstm.io.tabular import EventReader, read_events, sniff_separator, stream_name_for

T0 = 1_714_521_600.0  # 2024-05-01 00:00:00 UTC


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _csv(tmp_path: Path, name: str = "ev.csv", sep: str = ",") -> Path:
    rows = [
        ["machine", "ts", "temp", "pressure", "label"],
        ["p1", repr(T0), "20.5", "1.25", "0"],
        ["p2", repr(T0 + 60), "21", "", "0"],
        ["p1", repr(T0 + 60), "nan", "1.5", "1"],
    ]
    return _write(tmp_path / name, "".join(sep.join(r) + "\n" for r in rows))


def test_csv_numbers_and_missing(tmp_path: Path) -> None:
    ev, stats = read_events(
        _csv(tmp_path), ["temp", "pressure"], key="machine", time="ts", keep=["label"]
    )
    assert ev.keys == ["p1", "p2", "p1"]
    np.testing.assert_array_equal(ev.times, [T0, T0 + 60, T0 + 60])
    assert ev.time_text == [repr(T0), repr(T0 + 60), repr(T0 + 60)]
    assert ev.time_numeric
    np.testing.assert_array_equal(ev.x, [[20.5, 1.25], [21.0, np.nan], [np.nan, 1.5]])
    assert ev.x.dtype == np.float64 and ev.x.shape == (3, 2)
    assert ev.lines.tolist() == [2, 3, 4]
    assert ev.extra == {"label": ["0", "0", "1"]}
    assert stats.rows == 3 and stats.missing == {"temp": 1, "pressure": 1}
    assert stats.bad == {"temp": 0, "pressure": 0} and stats.bad_summary() == ""


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_separator_is_sniffed(tmp_path: Path, sep: str) -> None:
    plain, _ = read_events(_csv(tmp_path), ["temp", "pressure"], key="machine", time="ts")
    other, _ = read_events(
        _csv(tmp_path, "other.csv", sep), ["temp", "pressure"], key="machine", time="ts"
    )
    assert other.keys == plain.keys
    np.testing.assert_array_equal(other.x, plain.x)
    assert sniff_separator(f"a{sep}b{sep}c\n") == sep
    assert sniff_separator("single\n") == ","


def test_explicit_sep_overrides_the_guess(tmp_path: Path) -> None:
    # As many commas as semicolons in the header: the guess (',') is wrong.
    p = _write(tmp_path / "x.csv", "id;a note, with, commas;v\nq;free, text, here;1.5\n")
    with pytest.raises(InputError, match="no column 'id', 'v'; .* may be wrong"):
        read_events(p, ["v"], key="id")
    ev, _ = read_events(p, ["v"], key="id", sep=";", keep=["a note, with, commas"])
    assert ev.keys == ["q"] and ev.x.tolist() == [[1.5]]
    assert ev.extra == {"a note, with, commas": ["free, text, here"]}


def test_iso_times_all_forms(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "iso.csv",
        "ts,v\n2024-05-01 00:00:00,1\n2024-05-01T00:01:00,2\n2024-05-01T00:02:00.5Z,3\n",
    )
    ev, _ = read_events(p, ["v"], time="ts")
    np.testing.assert_array_equal(ev.times, [T0, T0 + 60, T0 + 120.5])
    assert ev.time_text[0] == "2024-05-01 00:00:00" and not ev.time_numeric
    # Offsets take the row-by-row path and land on the same instants.
    p = _write(
        tmp_path / "off.csv", "ts,v\n2024-05-01T02:00:00+02:00,1\n2024-04-30T23:01:00-01:00,2\n"
    )
    ev, _ = read_events(p, ["v"], time="ts")
    np.testing.assert_array_equal(ev.times, [T0, T0 + 60])


def test_numbers_among_iso_times_are_epoch_seconds(tmp_path: Path) -> None:
    # numpy's date parser would read '1714521660' as a year; the row-by-row path must.
    p = _write(tmp_path / "mix.csv", f"ts,v\n2024-05-01 00:00:00,1\n{T0 + 60:.0f},2\n2024,3\n"
               "2024-05-01 00:02:00,4\n")  # fmt: skip
    ev, _ = read_events(p, ["v"], time="ts")
    np.testing.assert_array_equal(ev.times, [T0, T0 + 60, 2024.0, T0 + 120])


def test_time_units(tmp_path: Path) -> None:
    p = _write(tmp_path / "ms.csv", f"ts,v\n{int(T0 * 1000)},1\n{int(T0 * 1000) + 1500},2\n")
    ev, _ = read_events(p, ["v"], time="ts", time_unit="ms")
    np.testing.assert_allclose(ev.times, [T0, T0 + 1.5], rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="time unit is 'h'"):
        EventReader(p, ["v"], time="ts", time_unit="h")


def test_jsonl_fields_nulls_and_numeric_keys(tmp_path: Path) -> None:
    lines = [
        {"id": 7, "ts": T0, "a": 1.5, "b": None},
        {"id": "x", "ts": "2024-05-01T00:01:00Z", "a": 2},
        {},  # replaced by a blank line below
        {"id": 7, "ts": T0 + 120, "a": "3.5", "b": 4, "extra": [1, 2]},
    ]
    text = "\n".join(orjson.dumps(o).decode() for o in lines).replace("{}", "   ")
    p = _write(tmp_path / "ev.jsonl", text + "\n")
    ev, stats = read_events(p, ["a", "b"], key="id", time="ts")
    assert ev.keys == ["7", "x", "7"]
    np.testing.assert_array_equal(ev.times, [T0, T0 + 60, T0 + 120])
    np.testing.assert_array_equal(ev.x, [[1.5, np.nan], [2.0, np.nan], [3.5, 4.0]])
    assert ev.lines.tolist() == [1, 2, 4]
    assert stats.missing == {"a": 0, "b": 2}


@pytest.mark.parametrize("name", ["ev.csv.gz", "ev.data"])
def test_gzip_by_suffix_or_magic(tmp_path: Path, name: str) -> None:
    raw = _csv(tmp_path).read_bytes()
    p = tmp_path / name
    p.write_bytes(gzip.compress(raw))
    ev, _ = read_events(p, ["temp", "pressure"], key="machine", time="ts", fmt="csv")
    plain, _ = read_events(_csv(tmp_path), ["temp", "pressure"], key="machine", time="ts")
    assert ev.keys == plain.keys
    np.testing.assert_array_equal(ev.x, plain.x)


def test_gzip_jsonl_detected_from_content(tmp_path: Path) -> None:
    p = tmp_path / "events.gz"
    p.write_bytes(gzip.compress(b'{"k": "a", "v": 1}\n{"k": "a", "v": 2}\n'))
    ev, _ = read_events(p, ["v"], key="k")
    assert ev.x[:, 0].tolist() == [1.0, 2.0]


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    body = "".join(f"k{i % 3},{T0 + i},{i}\n" for i in range(20_000))
    data = gzip.compress(("key,ts,v\n" + body).encode())
    p = tmp_path / "cut.csv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.csv\.gz: compressed data is truncated") as exc:
        read_events(p, ["v"], key="key", time="ts")
    assert "after line" in str(exc.value)


def test_missing_column_lists_the_present_ones(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        read_events(_csv(tmp_path), ["temp", "flow"], key="machine", time="ts")
    msg = str(exc.value)
    assert "ev.csv: line 1: no column 'flow'" in msg
    assert "'machine', 'ts', 'temp', 'pressure', 'label'" in msg


def test_wrong_separator_hint(tmp_path: Path) -> None:
    p = _write(tmp_path / "x.csv", "a b c\n1 2 3\n")
    with pytest.raises(InputError, match="delimiter may be wrong"):
        read_events(p, ["a"])


def test_missing_jsonl_field(tmp_path: Path) -> None:
    p = _write(tmp_path / "x.jsonl", '{"k": 1, "v": 2}\n')
    with pytest.raises(InputError, match=r"no field 'w' in the first 1 events .* 'k', 'v'"):
        read_events(p, ["w"], key="k")


@pytest.mark.parametrize(
    ("cell", "line"),
    [("yesterday", 3), ("", 3), ("nan", 3)],
)
def test_bad_time_names_line_and_column(tmp_path: Path, cell: str, line: int) -> None:
    p = _write(tmp_path / "t.csv", f"ts,v\n{T0},1\n{cell},2\n")
    with pytest.raises(InputError) as exc:
        read_events(p, ["v"], time="ts")
    msg = str(exc.value)
    assert f"t.csv: line {line}, column 'ts': cannot read the time {cell!r}" in msg
    assert "ISO-8601" in msg


def test_bad_iso_time_in_a_chunk_of_iso_times(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "t.csv",
        "ts,v\n2024-05-01 00:00:00,1\n2024-05-01 25:00:00,2\n2024-05-01 01:00:00,3\n",
    )
    with pytest.raises(
        InputError, match=r"line 3, column 'ts': cannot read the time '2024-05-01 25"
    ):
        read_events(p, ["v"], time="ts")


def test_bad_jsonl_time_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.jsonl", '{"k": "a", "ts": 1, "v": 1}\n{"k": "a", "ts": [1], "v": 1}\n')
    with pytest.raises(InputError, match=r"line 2, column 'ts': cannot read the time \[1\]"):
        read_events(p, ["v"], key="k", time="ts")
    p = _write(tmp_path / "k.jsonl", '{"k": "a", "v": 1}\n{"v": 1}\n')
    with pytest.raises(InputError, match=r"line 2, column 'k': key is None"):
        read_events(p, ["v"], key="k")


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"e\.csv: the file is empty; expected a header"):
        read_events(_write(tmp_path / "e.csv", ""), ["v"])
    with pytest.raises(InputError, match=r"h\.csv: no events in the file \(only a header line\)"):
        read_events(_write(tmp_path / "h.csv", "k,v\n\n"), ["v"], key="k")
    with pytest.raises(InputError, match=r"e\.jsonl: no events in the file; expected"):
        read_events(_write(tmp_path / "e.jsonl", "\n\n"), ["v"])
    p = tmp_path / "e.csv.gz"
    p.write_bytes(gzip.compress(b""))
    with pytest.raises(InputError, match="the file is empty"):
        read_events(p, ["v"])


def test_sporadic_non_numeric_cells_are_missing_and_counted(tmp_path: Path) -> None:
    p = _write(tmp_path / "b.csv", "v,w\n1,2\noops,3\nNA,n/a\n4,-\n")
    ev, stats = read_events(p, ["v", "w"])
    np.testing.assert_array_equal(ev.x, [[1, 2], [np.nan, 3], [np.nan, np.nan], [4, np.nan]])
    assert stats.bad == {"v": 1, "w": 1}
    assert stats.missing == {"v": 1, "w": 1}
    assert stats.first_bad == {"v": (3, "oops"), "w": (5, "-")}
    assert "v: 1 (first at line 3: 'oops')" in stats.bad_summary()


def test_a_column_of_words_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "w.csv", "name,v\nalpha,1\nbeta,2\n")
    with pytest.raises(InputError, match=r"w\.csv: line 2, column 'name': 'alpha' is not a number"):
        read_events(p, ["name"])
    # Decimal commas under ';' look the same, and say so.
    p = _write(tmp_path / "dc.csv", "k;v\na;1,5\na;2,5\n")
    with pytest.raises(InputError, match="decimal commas"):
        read_events(p, ["v"], key="k")


def test_ragged_row_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "r.csv", "k,v\na,1\nb,2,3\n")
    with pytest.raises(InputError, match=r"r\.csv: line 3: 3 fields, expected 2"):
        read_events(p, ["v"], key="k")


def test_invalid_json_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "j.jsonl", '{"v": 1}\n{"v": 2\n')
    with pytest.raises(InputError, match=r"j\.jsonl: line 2: not valid JSON"):
        read_events(p, ["v"])
    p = _write(tmp_path / "a.jsonl", '{"v": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"line 2: a JSON list, expected an object"):
        read_events(p, ["v"])


def test_empty_key_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "k.csv", "k,v\na,1\n,2\n")
    with pytest.raises(InputError, match=r"line 3, column 'k': empty stream key"):
        read_events(p, ["v"], key="k")


def test_no_key_and_no_time(tmp_path: Path) -> None:
    p = _write(tmp_path / "pump-7.csv.gz", "")
    p.write_bytes(gzip.compress(b"v\n1\n2\n3\n"))
    r = EventReader(p, ["v"], chunk_rows=2)
    chunks = list(r)
    assert [len(c) for c in chunks] == [2, 1]
    ev = r.read_all()  # a second pass starts over
    assert r.stats.rows == 3
    assert ev.keys == ["pump-7"] * 3
    assert ev.times.tolist() == [0.0, 1.0, 2.0] and ev.time_text == ["0", "1", "2"]
    assert stream_name_for("dir/a.b.jsonl.gz") == "a.b"


def test_chunking_changes_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 103
    lines = ["k,ts,a,b"]
    for i in range(n):
        a = "" if i % 17 == 0 else repr(float(rng.normal()))
        lines.append(f"s{i % 4},{T0 + i},{a},{float(rng.normal())!r}")
        if i % 25 == 0:
            lines.append("")  # blank lines are skipped but counted
    p = _write(tmp_path / "c.csv", "\n".join(lines) + "\n")
    whole = EventReader(p, ["a", "b"], key="k", time="ts").read_all()
    r = EventReader(p, ["a", "b"], key="k", time="ts", chunk_rows=10)
    parts = list(r)
    assert len(parts) == 11
    assert r.stats.rows == n and r.stats.missing["a"] == len(range(0, n, 17))
    joined = r.read_all()
    assert joined.keys == whole.keys
    np.testing.assert_array_equal(joined.x, whole.x)
    np.testing.assert_array_equal(joined.lines, whole.lines)
    # Line numbers point at the physical line of each event.
    text = p.read_text().split("\n")
    for i in (0, 26, 60, n - 1):
        assert text[whole.lines[i] - 1].startswith(f"s{i % 4},")


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c d", "é"]), finite, st.one_of(st.none(), finite)),
        min_size=1,
        max_size=30,
    ),
    jsonl=st.booleans(),
)
def test_round_trip_is_exact(tmp_path_factory: pytest.TempPathFactory, rows, jsonl: bool) -> None:
    d = tmp_path_factory.mktemp("rt")
    if jsonl:
        p = d / "x.jsonl"
        p.write_bytes(
            b"".join(
                orjson.dumps({"k": k, "t": i, "u": u, "v": v}) + b"\n"
                for i, (k, u, v) in enumerate(rows)
            )
        )
    else:
        p = d / "x.csv"
        body = "".join(
            f"{k},{i},{u!r},{'' if v is None else repr(v)}\n" for i, (k, u, v) in enumerate(rows)
        )
        p.write_text("k,t,u,v\n" + body, encoding="utf-8")
    ev, _ = read_events(p, ["u", "v"], key="k", time="t")
    assert ev.keys == [k for k, _, _ in rows]
    want = np.array([[u, np.nan if v is None else v] for _, u, v in rows], np.float64)
    np.testing.assert_array_equal(ev.x, want)
    np.testing.assert_array_equal(ev.times, np.arange(len(rows), dtype=np.float64))
