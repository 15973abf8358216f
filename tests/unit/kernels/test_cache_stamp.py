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


def test_a_read_only_cache_is_copied_to_a_writable_one(tmp_path: Path) -> None:
    baked = tmp_path / "baked" / "kernels_abc"
    baked.mkdir(parents=True)
    (baked / "detect._detect_batch-390.py311.nbi").write_bytes(b"index")
    fallback = tmp_path / "tmp" / "cache"
    chosen = KC.use_writable_cache(tmp_path / "baked", fallback, writable=lambda p: False)
    assert chosen == fallback
    copied = fallback / "kernels_abc" / "detect._detect_batch-390.py311.nbi"
    assert copied.read_bytes() == b"index"
    assert KC.use_writable_cache(tmp_path / "baked", fallback) == tmp_path / "baked"


def test_kernels_compile_and_cache_with_no_writable_cache_dir_or_home(tmp_path: Path) -> None:
    """NUMBA_CACHE_DIR unusable and no $HOME (a read-only pod): the kernels still cache,
    into the fallback, instead of Numba's "no locator available"."""
    import os
    import subprocess
    import sys

    mod = tmp_path / "tiny.py"
    mod.write_text(
        "from numba import njit\n"
        "from streamlstm.kernels.config import NJIT\n"
        "@njit(**NJIT)\n"
        "def f(x):\n"
        "    return x + 1\n"
        "print(f(1))\n"
    )
    fallback = tmp_path / "fallback"
    env = {**os.environ, "NUMBA_CACHE_DIR": "/dev/null/cache", "HOME": "/dev/null",
           KC.FALLBACK_ENV: str(fallback)}  # fmt: skip
    out = subprocess.run([sys.executable, str(mod)], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2"
    assert list(fallback.rglob("tiny.f-*.nbi")), sorted(p.name for p in fallback.rglob("*"))
