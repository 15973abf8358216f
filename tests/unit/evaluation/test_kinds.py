"""Anomaly kinds: read from JSON windows and from a label column, counted per kind, and
shown by ``streamlstm evaluate`` on a synthetic fleet written with its kinds (seeded)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from streamlstm import evaluation as E
from streamlstm.cli import main
from streamlstm.detector import Detector
from streamlstm.errors import InputError
from streamlstm.evaluation.report import format_text
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.model.baselines import fit_normalisation, last_value_model
from tests.conftest import SEED


# -- reading kinds ------------------------------------------------------------------------
def test_json_windows_may_name_their_kind_and_kinds_follow_the_sort():
    doc = {"a": [[300, 400, "stuck"], [100, 200], ["50", "60", "spike"]], "b": [[1, 2]]}
    windows, kinds = E.parse_labels(doc)
    assert windows == {"a": [(50.0, 60.0), (100.0, 200.0), (300.0, 400.0)], "b": [(1.0, 2.0)]}
    assert kinds == {"a": ["spike", None, "stuck"], "b": [None]}
    # the kind-less reader gives the same windows, as before kinds existed
    assert E.parse_windows(doc) == windows


@pytest.mark.parametrize("bad", [3, "", "2024-05-01", "  ", ["spike"], "x" * 65])
def test_a_bad_kind_in_json_names_the_window(bad):
    with pytest.raises(InputError, match=r"labels: 'a'\[1\]: expected \[start, end\]"):
        E.parse_labels({"a": [[1, 2, "ok"], [3, 4, bad]]})


def test_label_cells_are_flags_or_kind_names():
    cells = ["0", "spike", "Spike", "", "1", "true", "normal", "level_shift", "0.0", "0.9"]
    flags, kinds = E.parse_label_cells(cells, "f.csv: column 'label'")
    assert flags.tolist() == [False, True, True, False, True, True, False, True, False, True]
    assert kinds.tolist() == [None, "spike", "Spike", None, None, None, None, "level_shift",
                              None, None]  # fmt: skip


@pytest.mark.parametrize("bad", ["nan", "inf", "2024-05-01 12:00", "3 pumps", "_x", "a,b" * 40])
def test_a_bad_label_cell_names_file_column_and_line(bad):
    with pytest.raises(InputError) as err:
        E.parse_label_cells(["0", "spike", bad], "f.csv: column 'label'", np.array([2, 3, 7]))
    msg = str(err.value)
    assert msg.startswith("f.csv: column 'label', line 7: ")
    assert repr(bad) in msg and "kind name" in msg


def test_runs_of_one_kind_are_one_window_and_a_change_of_kind_splits():
    t = np.arange(12.0) * 60
    cells = ["0", "spike", "spike", "stuck", "stuck", "0", "1", "1", "drift", "0", "drift", "0"]
    flags, kinds = E.parse_label_cells(cells, "x")
    windows, wk = E.windows_from_labels(t, flags, kinds)
    assert windows == [(60.0, 120.0), (180.0, 240.0), (360.0, 420.0), (480.0, 480.0),
                       (600.0, 600.0)]  # fmt: skip
    assert wk == ["spike", "stuck", None, "drift", "drift"]
    # without kinds the same rows give the 0/1 windows
    assert E.windows_from_labels(t, flags)[0] == E.windows_from_flags(t, flags)
    assert E.windows_from_flags(t, flags) == [(60.0, 240.0), (360.0, 480.0), (600.0, 600.0)]


# -- counting per kind --------------------------------------------------------------------
def test_per_kind_numbers_on_a_hand_made_case():
    t = np.arange(100.0)
    one = np.ones(100, bool)

    def stream(windows, kinds, opened_at, open_spans):
        opened = np.zeros(100, bool)
        opened[opened_at] = True
        alert = np.zeros(100, bool)
        for a, b in open_spans:
            alert[a : b + 1] = True
        return E.stream_quality(t, opened, alert, E.label_points(t, windows), one, windows, kinds)

    # stream 1: spike [10, 19] caught at 12, open 12..15 (4 of 10 events); stuck [40, 49]
    # missed; spike [70, 79] caught at 70, open 70..79 (10 of 10); a false alert at 90
    q1 = stream(
        [(10.0, 19.0), (40.0, 49.0), (70.0, 79.0)],
        ["spike", "stuck", "spike"],
        [12, 70, 90],
        [(12, 15), (70, 79), (90, 91)],
    )
    # stream 2: stuck [20, 39] caught at 25, open 25..29 (5 of 20); a window of no kind
    # [60, 69] caught at 69, open 69..69 (1 of 10)
    q2 = stream([(20.0, 39.0), (60.0, 69.0)], ["stuck", None], [25, 69], [(25, 29), (69, 69)])
    total = E.Quality()
    total += q1
    total += q2
    assert total.window_kinds == ["spike", "stuck", "spike", "stuck", None]
    kq = E.kind_quality(total)
    assert list(kq) == ["spike", "stuck", E.UNNAMED_KIND]  # by name, unnamed last
    spike, stuck, unnamed = kq.values()
    assert (spike.windows, spike.caught, spike.recall) == (2, 2, 1.0)
    assert spike.median_ttd == 1.0 and spike.held == pytest.approx((0.4 + 1.0) / 2)
    assert (stuck.windows, stuck.caught, stuck.recall) == (2, 1, 0.5)
    assert stuck.median_ttd == 5.0 and stuck.held == pytest.approx(0.25)
    assert (unnamed.windows, unnamed.caught, unnamed.median_ttd) == (1, 1, 9.0)
    assert unnamed.held == pytest.approx(0.1)
    assert sum(k.windows for k in kq.values()) == total.windows
    assert sum(k.caught for k in kq.values()) == total.caught
    assert total.false_alerts == 1  # per stream, in no kind
    text = format_text(total, {"s1": q1, "s2": q2}, [], 0.5)
    rows = _section(text, "per anomaly kind")
    assert rows == [
        ["spike", "2", "2", "100%", "1s", "70%"],
        ["stuck", "2", "1", "50%", "5s", "25%"],
        ["(not", "named)", "1", "1", "100%", "9s", "10%"],
    ]


def test_no_kind_table_when_no_label_names_a_kind():
    t = np.arange(50.0)
    w = [(10.0, 20.0)]
    opened = np.zeros(50, bool)
    opened[12] = True
    q = E.stream_quality(t, opened, opened, E.label_points(t, w), np.ones(50, bool), w)
    assert q.window_kinds == [None] and E.kind_quality(q) == {}
    text = format_text(q, {"s": q}, [], 0.5)
    assert "per anomaly kind" not in text
    assert _section(text, "per labelled window")[0][:2] == ["s", "1970-01-01"]  # no kind


def test_replay_keeps_kinds_from_json_and_from_a_column_alike():
    fleet = generate_fleet(FleetSpec(n_streams=3, n_steps=300, anomaly_rate=2.0, seed=SEED))
    keys, times, x, labels = fleet.events()
    model = last_value_model(list(fleet.features), *fit_normalisation(x))
    kinds_by_row = fleet.kind_labels()[
        [fleet.keys.index(k) for k in keys], np.searchsorted(fleet.times, times)
    ]
    row_kinds = np.where(kinds_by_row == "", None, kinds_by_row).astype(object)
    a = E.replay(Detector(model), keys, times, x, labels=labels, label_kinds=row_kinds)
    windows, kinds = E.parse_labels(
        {
            k: [[s, e, kind] for (s, e), kind in zip(ws, ks, strict=True)]
            for k, ws, ks in _fleet_windows(fleet)
        }  # fmt: skip
    )
    b = E.replay(Detector(model), keys, times, x, windows=windows, kinds=kinds)
    assert a.windows == b.windows and a.kinds == b.kinds
    assert sorted(k for ks in a.kinds.values() for k in ks) == sorted(
        an.kind for an in fleet.anomalies
    )


def _fleet_windows(fleet):
    for key in fleet.keys:
        an = sorted((a for a in fleet.anomalies if a.key == key), key=lambda a: a.start)
        yield key, [(a.start, a.end) for a in an], [a.kind for a in an]


# -- the command on a synthetic fleet -------------------------------------------------------
def _section(text: str, title: str) -> list[list[str]]:
    """Rows (split on whitespace) of the table that follows the line starting ``title``."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(title))
    assert set(lines[i + 2].replace(" ", "")) == {"-"}  # header, rule, rows
    rows = []
    for line in lines[i + 3 :]:
        if not line.strip() or (line.startswith("(") and not line.startswith(E.UNNAMED_KIND)):
            break  # a note such as "(3 more windows not shown)" ends the table
        rows.append(line.split())
    return rows


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kinds")
    fleet = generate_fleet(FleetSpec(n_streams=6, n_steps=500, anomaly_rate=2.5, seed=SEED))
    csv, labels = tmp / "fleet.csv", tmp / "windows.json"
    fleet.write_csv(csv, label_kinds=True)
    fleet.write_labels(labels)
    return fleet, csv, labels


def _evaluate(tmp_path, capsys, csv, label_args):
    js = tmp_path / "q.json"
    rc = main(["evaluate", "--data", str(csv), *label_args, "--key", "machine", "--time", "ts",
               "--learn-first", "0.3", "--baseline", "last-value", "--no-sweep",
               "--rows", "500", "--json", str(js)])  # fmt: skip
    assert rc == 0
    return capsys.readouterr().out, json.loads(js.read_text())


def test_evaluate_shows_the_fleet_kinds_and_counts_match_the_window_log(
    tmp_path, capsys, fleet_files
):
    fleet, csv, labels = fleet_files
    out, doc = _evaluate(tmp_path, capsys, csv, ["--label-column", "label"])
    # the windows evaluate counts: those ending at or after the stream's first judged event
    keys, times, _, _ = fleet.events()
    judged = E.judged_mask(keys, 0.3)
    first = {k: times[judged & (keys == k)].min() for k in fleet.keys}
    counted = [a for a in fleet.anomalies if a.end >= first[a.key]]
    expected = Counter(a.kind for a in counted)
    assert len(expected) >= 3, "the seeded fleet should hold several kinds"

    kind_rows = _section(out, "per anomaly kind")
    table = {r[0]: r[1:] for r in kind_rows}
    assert set(table) == set(expected) == set(doc["kinds"])
    assert {k: int(v[0]) for k, v in table.items()} == dict(expected)

    # per-window log: stream, kind, start (date, time, UTC), length, caught, TTD, held
    log_rows = _section(out, "per labelled window")
    assert len(log_rows) == len(counted) == doc["overall"]["windows"]
    assert sorted((r[0], r[1]) for r in log_rows) == sorted((a.key, a.kind) for a in counted)
    for kind, (windows, caught, pct, ttd, held) in table.items():
        mine = [r for r in log_rows if r[1] == kind]
        hits = [r for r in mine if r[6] == "yes"]
        assert int(windows) == len(mine) and int(caught) == len(hits)
        assert pct == f"{100 * len(hits) / len(mine):.0f}%"
        recs = [w for w in doc["windows"] if w["kind"] == kind and w["caught"]]
        assert len(recs) == len(hits) == doc["kinds"][kind]["caught"]
        if recs:
            shares = [w["held"] for w in recs]
            assert doc["kinds"][kind]["held"] == pytest.approx(float(np.mean(shares)))
            ttd_med = float(np.median([w["ttd_s"] for w in recs]))
            assert doc["kinds"][kind]["median_ttd_s"] == pytest.approx(ttd_med)
            assert held == f"{100 * np.mean(shares):.0f}%"
        else:
            assert doc["kinds"][kind]["held"] is None and ttd == "-"
    assert sum(k["caught"] for k in doc["kinds"].values()) == doc["overall"]["caught"]
    assert not math.isnan(doc["overall"]["recall"])

    # the same fleet's windows JSON (with kinds) gives the same numbers
    out2, doc2 = _evaluate(tmp_path, capsys, csv, ["--labels", str(labels)])
    assert doc2["kinds"] == doc["kinds"] and doc2["overall"] == doc["overall"]
    assert _section(out2, "per anomaly kind") == kind_rows


def test_evaluate_refuses_a_bad_label_cell_naming_file_column_and_line(tmp_path, capsys):
    rng = np.random.default_rng(SEED)
    csv = tmp_path / "f.csv"
    cells = ["0"] * 40
    cells[10:14] = ["spike"] * 4
    cells[30] = "2024-05-01 12:30"  # a time pasted into the label column: line 32
    with csv.open("w") as fh:
        fh.write("ts,a,state\n")
        for i, (v, c) in enumerate(zip(rng.normal(size=40), cells, strict=True)):
            fh.write(f"{60.0 * i},{float(v)!r},{c}\n")
    rc = main(["evaluate", "--data", str(csv), "--label-column", "state", "--features", "a",
               "--learn-first", "0.3", "--baseline", "last-value", "--no-sweep"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{csv}: column 'state', line 32: '2024-05-01 12:30' is not a label" in err
