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
