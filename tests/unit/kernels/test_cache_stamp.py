"""The compiled-kernel cache is dropped when any kernel source changes (numba alone
tracks only each function's own file)."""

from __future__ import annotations

from pathlib import Path

from streamlstm.kernels import config as KC


def test_cache_is_dropped_when_a_source_changes_and_kept_otherwise(tmp_path: Path) -> None:
    (tmp_path / "detect.py").write_text("x = 1\n")
    (tmp_path / "regime.py").write_text("K = 4.0\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "detect._detect_batch-390.py311.nbi").write_bytes(b"old")
    (cache / "detect._detect_batch-390.py311.1.nbc").write_bytes(b"old")
    (cache / "detect.cpython-311.pyc").write_bytes(b"keep")
    assert KC.drop_stale_cache(tmp_path, [cache]) == 2  # no stamp yet: built from unknown
    assert sorted(p.name for p in cache.iterdir()) == sorted(["detect.cpython-311.pyc", KC.STAMP])
    (cache / "detect._detect_batch-390.py311.nbi").write_bytes(b"new")
    assert KC.drop_stale_cache(tmp_path, [cache]) == 0  # same sources: kept
    (tmp_path / "regime.py").write_text("K = 3.0\n")  # only the inlined file changed
    assert KC.drop_stale_cache(tmp_path, [cache]) == 1
    assert not list(cache.glob("*.nbi"))


def test_a_read_only_or_missing_cache_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    elsewhere = tmp_path / "user" / "cache"  # not in the source folder: never created
    assert KC.drop_stale_cache(tmp_path, [elsewhere]) == 0 and not elsewhere.exists()


def test_the_installed_kernels_carry_their_stamp() -> None:
    src = Path(KC.__file__).resolve().parent
    stamp = src / "__pycache__" / KC.STAMP
    assert stamp.read_text() == KC.sources_digest(src)
