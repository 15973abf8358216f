"""`streamlstm bench`: a tiny run renders the table (numbers are not checked, only shape)."""

from __future__ import annotations

import argparse

from streamlstm.cli import bench


def _args(tmp_path, **over) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(
        ["--hidden", "8", "--layers", "1,2", "--batch", "1,16", "--streams", "300",
         "--repeats", "1", "--events", "64", "--out", str(tmp_path / "results.md")]
    )  # fmt: skip
    for k, v in over.items():
        setattr(args, k, v)
    return args


def test_tiny_run_writes_the_table(tmp_path, capsys):
    args = _args(tmp_path, no_torch=True)
    # bench() directly: run() would re-run itself in a single-thread interpreter.
    assert bench.bench(args) == 0
    text = (tmp_path / "results.md").read_text()
    assert text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| 8 |")]
    # 2 layer counts x 2 batch sizes, then one state-size row per layer count.
    assert len(rows) == 4 + 2
    assert "n/a" in rows[0]  # no torch columns
    assert "streams / GiB" in text and "Command: `streamlstm bench" in text


def test_argv_round_trips(tmp_path):
    args = _args(tmp_path, quick=True, clock="wall")
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    again = p.parse_args(bench._argv(args))
    assert vars(again) == vars(args)


def test_timed_streams_are_past_the_scorers_warm_up(tmp_path):
    # A daemon's streams have seen hundreds of events; new ones take the scorer's
    # cheaper warm-up paths, so the table is warmed before timing.
    from streamlstm.kernels import layout as K
    from streamlstm.kernels import regime

    args = _args(tmp_path, no_torch=True, warm_events=regime.BASELINE_EVENTS + 8)
    b = bench._Bench(args, 8, 1)
    table = b.det.table
    slots = table._lookup(b.keys)
    events = table.arrays["istat"][slots, K.I_EVENTS]
    assert events.min() == events.max() == regime.BASELINE_EVENTS + 8
    # the copied rows are the warmed streams' own: a later event is in order for each
    assert (table.last_time[slots] == b.clock).all()
    assert b.kernel(16, 64) > 0


def test_a_model_of_changes_is_timed_with_its_last_values_kept(tmp_path):
    # `--inputs changes`: the detector keeps each stream's last value beside its forecast
    args = _args(tmp_path, no_torch=True, inputs="changes", warm_events=4)
    b = bench._Bench(args, 8, 1)
    assert b.model.delta and b.det.table.arrays["fc"].shape[1] == 2 * args.features
    assert b.kernel(16, 64) > 0
