"""Numba flags for every kernel, in one place (stumpy's habit).

- ``cache=True``: compiled kernels are written next to the sources (or to
  ``NUMBA_CACHE_DIR``) so a restarted daemon or a second test session does not
  pay the compile again.
- ``fastmath=False``: results must not depend on how many events share a
  micro-batch. Re-association would let LLVM sum a dot product in a different
  order in the vectorised body and in the remainder loop, and batched results
  would stop being bit-identical to per-event ones.
- ``error_model="numpy"``: the default "python" model inserts a
  division-by-zero branch in front of every float division, which blocks
  vectorisation of the gate loops.
- ``boundscheck=False``: the public wrappers validate shapes once per call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

NJIT: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",
    "boundscheck": False,
}

# Small helpers called from other kernels many times per input (the JSON scanner's
# token readers): inlined into the caller in Numba's IR, which also drops the
# reference counting a call with array arguments costs (~2x the scanner's speed).
NJIT_INLINE: dict[str, Any] = {**NJIT, "inline": "always"}

# Kernels that split independent rows over threads with prange; same numerics as NJIT.
NJIT_PARALLEL: dict[str, Any] = {**NJIT, "parallel": True}

# Training kernels (streamlstm.kernels.train) may fuse a * b + c into one FMA
# ("contract"; no re-association):
# it halves the arithmetic of their small matrix products. Results still do not
# depend on the minibatch split or the thread count (every row runs the same code),
# which is all training needs; the scoring kernels keep NJIT.
NJIT_TRAIN: dict[str, Any] = {**NJIT, "fastmath": {"contract"}}
NJIT_TRAIN_PARALLEL: dict[str, Any] = {**NJIT_TRAIN, "parallel": True}


# -- the compiled-kernel cache follows the sources ---------------------------------------
# Numba keys a cached function on its own file's timestamp only, so a change to a kernel
# another file inlines (regime.py into detect.py's _detect_batch) kept serving the old
# machine code: after an edit, or an upgrade that left detect.py as it was. Every import
# compares a digest of this folder's sources with the one the cache was built from and
# drops the cache when they differ (a read-only cache, a baked image, is left alone).
STAMP = "streamlstm-kernels.sha256"


def sources_digest(src_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src_dir.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _cache_dirs(src_dir: Path) -> list[Path]:
    dirs = [src_dir / "__pycache__"]
    try:
        from numba.core import caching
        from numba.core import config as numba_config

        sub = caching._CacheLocator.get_suitable_cache_subpath(str(src_dir / "config.py"))
        user_dir = getattr(numba_config, "CACHE_DIR", "")
        if user_dir:
            dirs.append(Path(user_dir) / sub)
        dirs.append(Path(caching.AppDirs(appname="numba", appauthor=False).user_cache_dir) / sub)
    except Exception:  # noqa: BLE001 - numba's internals moved: the in-tree cache still counts
        pass
    return dirs


def drop_stale_cache(src_dir: Path, cache_dirs: list[Path] | None = None) -> int:
    """Delete compiled kernels built from other sources; returns how many files went."""
    digest = sources_digest(src_dir)
    removed = 0
    for d in _cache_dirs(src_dir) if cache_dirs is None else cache_dirs:
        stamp = d / STAMP
        try:
            if stamp.read_text() == digest:
                continue
        except OSError:
            pass
        try:
            if not d.is_dir():
                if d.parent != src_dir:
                    continue
                d.mkdir()
            for f in [*d.glob("*.nbi"), *d.glob("*.nbc")]:
                f.unlink()
                removed += 1
            stamp.write_text(digest)
        except OSError:
            continue
    return removed


# -- a read-only cache (a baked container image with readOnlyRootFilesystem) ------------
# Numba refuses a cache directory it cannot write to: it recompiles into $HOME/.cache
# (12 s to ready instead of 0.1 s) or, with no writable $HOME, fails with "no locator
# available". So a read-only NUMBA_CACHE_DIR is copied once into a writable one (the
# pod's /tmp emptyDir) and Numba pointed there: the baked kernels load, nothing compiles.
FALLBACK_ENV = "STREAMLSTM_CACHE_FALLBACK"  # where to copy it (default: $TMPDIR/...)


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            return True
    except OSError:
        return False


def use_writable_cache(
    cache_dir: Path, fallback: Path, writable: Callable[[Path], bool] = _writable
) -> Path:
    """``cache_dir`` if Numba can write to it, else ``fallback`` holding a copy of it."""
    if writable(cache_dir):
        return cache_dir
    if cache_dir.is_dir():
        shutil.copytree(cache_dir, fallback, dirs_exist_ok=True)
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


# Numba keys each compiled kernel on the CPU it was built for (name and features) and
# silently recompiles on any other: a baked image run on another node type pays the
# full compile. Say so once, with both CPU names, instead of a mystery slow start.
def foreign_cpus(cache_dir: Path, here: str) -> set[str]:
    """CPU names the cache's kernels were built for when none was built for ``here``."""
    import pickle

    seen: set[str] = set()
    for index in cache_dir.rglob("*.nbi"):
        try:
            with open(index, "rb") as f:
                pickle.load(f)  # numba's version
                _, overloads = pickle.loads(f.read())
            seen.update(str(key[1][1]) for key in overloads)
        except Exception:  # noqa: BLE001, S301 - numba's own files; unreadable = not ours
            continue
    return set() if here in seen else seen


# What the cache set-up found, said when the daemon compiles its kernels: this module runs
# at import, before the CLI has configured logging, so the lines wait here.
NOTES: list[tuple[int, str]] = []


def log_notes(logger: logging.Logger) -> None:
    while NOTES:
        level, msg = NOTES.pop(0)
        logger.log(level, "%s", msg)


def _warn_foreign_cpu(cache_dir: Path) -> None:
    try:
        from numba.core.registry import cpu_target

        here = str(cpu_target.target_context.codegen().magic_tuple()[1])
    except Exception:  # noqa: BLE001 - numba internals moved: no hint, no harm
        return
    others = foreign_cpus(cache_dir, here)
    if others:
        cpus = ", ".join(sorted(others))
        msg = (
            f"compiled kernels in {cache_dir} were built for CPU {cpus}, this one is {here}: "
            "compiling them again (a slower start; bake the image on this node type, or set "
            "NUMBA_CPU_NAME=generic both when baking and here)"
        )
        NOTES.append((logging.WARNING, msg))


def _configure_cache() -> None:
    from numba.core import config as numba_config

    user_dir = getattr(numba_config, "CACHE_DIR", "")
    if not user_dir:
        return  # in-tree caches: a read-only install compiles once into the user cache
    default = Path(tempfile.gettempdir()) / "streamlstm-numba-cache"
    fallback = Path(os.environ.get(FALLBACK_ENV) or default)
    chosen = use_writable_cache(Path(user_dir), fallback)
    if chosen != Path(user_dir):
        numba_config.CACHE_DIR = str(chosen)  # type: ignore[attr-defined]
        msg = f"compiled kernels: {user_dir} is read-only, using a copy in {chosen}"
        NOTES.append((logging.INFO, msg))
    _warn_foreign_cpu(chosen)


_configure_cache()
drop_stale_cache(Path(__file__).resolve().parent)
