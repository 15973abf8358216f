"""PNG plots of scored streams: file names, thinning, readable output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamlstm.offline import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_path_is_safe_and_unique(tmp_path: Path) -> None:
    used: set[str] = set()
    base = tmp_path / "out" / "scores.png"
    assert plot.plot_path(base, "pump 7/a", used).name == "scores-pump_7_a.png"
    assert plot.plot_path(base, "pump:7?a", used).name == "scores-pump_7_a-2.png"
    assert plot.plot_path(base, "../..", used).name == "scores-stream.png"
    assert plot.plot_path(base, "x" * 300, used).name == "scores-" + "x" * 80 + ".png"
    assert plot.plot_path(base, "k", used).parent == base.parent


def test_bin_max_keeps_single_spikes() -> None:
    a = np.array([0.0, 0.1, 0.9, 0.0, np.nan, 0.2, 0.5])
    np.testing.assert_array_equal(plot._bin_max(a, 3), [0.9, 0.2, 0.5])
    np.testing.assert_array_equal(plot._bin_max(a, 1), a)


@pytest.mark.parametrize("epoch", [True, False])
def test_plot_stream_writes_a_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epoch: bool
) -> None:
    monkeypatch.setattr(plot, "MAX_POINTS", 100)  # force the thinned path on a small series
    rng = np.random.default_rng(0)
    n = 450
    t0 = 1_714_521_600.0 if epoch else 0.0
    times = t0 + 60.0 * np.arange(n)
    x = np.cumsum(rng.normal(size=(n, 2)), axis=0).astype(np.float32)
    fc = np.vstack([np.full((1, 2), np.nan), x[:-1]]).astype(np.float32)
    score = rng.random(n).astype(np.float32)
    score[0] = np.nan
    spans = [(times[100], times[120]), (times[400], None)]
    out = plot.plot_stream(
        tmp_path / "sub" / "s.png", "pump-1", ("temp", "flow"), times, x, fc, score, spans, 0.7
    )
    assert out == tmp_path / "sub" / "s.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
