"""The container's start, without a container: the entry point (`streamlstm run`) with
NUMBA_CACHE_DIR on a read-only file system, as under readOnlyRootFilesystem, and no
writable $HOME. The kernels baked into it (by the Dockerfile's `python -m
streamlstm.service.warmup`) load from a copy: the daemon goes ready and nothing is
compiled. A cache baked on another CPU is compiled again, said in one line, and the
daemon still goes ready.

Read-only for real: as root (the file mode does not stop root) the cache is a read-only
bind mount in a mount namespace of the daemon's own (`unshare -m`); otherwise its mode."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamlstm.kernels import config as KC
from tests.integration.test_daemon import _config, _create_topics, _fleet, _produce, _records

pytestmark = pytest.mark.integration
KERNELS = Path(KC.__file__).resolve().parent


def _bake(cache: Path) -> Path:
    """NUMBA_CACHE_DIR as the image build leaves it (seeded from this checkout's cache)."""
    from numba.core.caching import _CacheLocator

    sub = cache / _CacheLocator.get_suitable_cache_subpath(str(KERNELS / "config.py"))
    sub.mkdir(parents=True)
    for f in (KERNELS / "__pycache__").glob("*"):
        if f.suffix in (".nbi", ".nbc") or f.name == KC.STAMP:
            shutil.copy2(f, sub / f.name)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    res = subprocess.run([sys.executable, "-m", "streamlstm.service.warmup"], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return sub


@pytest.fixture(scope="module")
def baked_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("baked") / "opt-numba-cache"
    _bake(cache)
    return cache


def _copy(baked: Path, tmp: Path) -> tuple[Path, Path]:
    """A fresh copy of the baked cache (each test makes its own read-only): (cache, sub)."""
    cache = tmp / "opt-numba-cache"
    shutil.copytree(baked, cache)
    (sub,) = [p.parent for p in cache.rglob(KC.STAMP)]
    return cache, sub


def _digests(d: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in d.rglob("*")
        if p.suffix in (".nbi", ".nbc")
    }


NOBODY = 65534


def _works(argv: list[str], **kw: Any) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=60, **kw).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _readonly(cache: Path, tmp: Path, argv: list[str]) -> tuple[list[str], int | None]:
    """(argv, user) that run ``argv`` with ``cache`` read-only for it. Not root: the file
    modes. Root: a read-only bind mount in a mount namespace of its own; where that is not
    allowed, the file modes and the nobody user (when it can run this Python)."""
    if os.geteuid() != 0:
        _read_only_modes(cache)
        return argv, None
    unshare = shutil.which("unshare")
    if unshare and _works([unshare, "-m", "true"]):
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        return [unshare, "-m", "sh", "-c", script, str(cache), *argv], None
    if _works([sys.executable, "-c", "import streamlstm"], user=NOBODY):
        for d in [tmp, *tmp.parents]:
            if d == Path(tempfile.gettempdir()) or d == d.parent:
                break
            d.chmod(d.stat().st_mode | 0o711)
        tmp.chmod(0o777)
        _read_only_modes(cache)
        return argv, NOBODY
    msg = "root without a mount namespace (unshare -m) or a nobody user that can run Python"
    if os.environ.get("CI"):
        pytest.fail(f"cannot make a read-only cache directory here: {msg}")
    pytest.skip(msg)
    raise AssertionError  # unreachable


def _read_only_modes(cache: Path) -> None:
    for p in [cache, *cache.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


def _run_ready(broker: Any, tmp: Path, cache: Path, model: Path) -> tuple[str, Path]:
    """Start the entry point on the read-only cache, wait for /readyz 200, stop it."""
    name = f"ro-{uuid.uuid4().hex[:6]}"
    _create_topics(broker.bootstrap, {f"{name}-events": 1, f"{name}-alerts": 1, f"{name}-dlq": 1})
    recs = [(0, k, v) for _, k, v in _records(_fleet(n_streams=2, n_steps=20))]
    _produce(broker.bootstrap, f"{name}-events", recs)
    cfg = _config(tmp, broker.bootstrap, model, f"{name}-events", name, 0)
    fallback = tmp / "fallback"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "HOME": "/nonexistent",
           KC.FALLBACK_ENV: str(fallback), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    argv = [sys.executable, "-m", "streamlstm", "run", "--config", str(cfg), "--metrics-port", "0"]
    log = tmp / "daemon.log"
    argv, user = _readonly(cache, tmp, argv)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, user=user)
        try:
            deadline = time.monotonic() + 300
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                text = log.read_text(errors="replace")
                if "/readyz on http://" in text:
                    port = text.split("/readyz on http://", 1)[1].split()[0].split(":")[1]
                    try:
                        url = f"http://127.0.0.1:{port}/readyz"
                        with urllib.request.urlopen(url, timeout=2) as r:
                            if r.status == 200:
                                break
                    except OSError:
                        pass
                time.sleep(0.3)
        finally:
            proc.terminate()
            code = proc.wait(60)
    assert code == 0, log.read_text()[-3000:]
    return log.read_text(errors="replace"), fallback


def _model(tmp: Path) -> Path:
    import numpy as np

    from streamlstm.cli.demo import persistence_model

    rng = np.random.default_rng(5)
    return persistence_model(rng.normal(size=(2, 200, 4))).save(tmp / "m.npz")


def test_entry_point_with_a_read_only_baked_cache_is_ready_without_compiling(
    broker: Any, baked_once: Path, tmp_path: Path
) -> None:
    cache, sub = _copy(baked_once, tmp_path)
    baked = _digests(sub)
    assert any(n.startswith("detect._detect_batch") for n in baked)
    text, fallback = _run_ready(broker, tmp_path, cache, _model(tmp_path))
    assert f"{cache} is read-only, using a copy in {fallback}" in text, text[-3000:]
    assert "no locator available" not in text and "built for CPU" not in text
    assert _digests(cache) == baked  # the read-only cache is untouched
    assert _digests(fallback) == baked, "a kernel was compiled again instead of loaded"


def test_a_cache_baked_on_another_cpu_is_compiled_again_not_a_crash(
    broker: Any, baked_once: Path, tmp_path: Path
) -> None:
    cache, sub = _copy(baked_once, tmp_path)
    for index in sub.glob("*.nbi"):  # every kernel says it was built for another CPU
        with open(index, "rb") as f:
            version = pickle.load(f)
            stamp, overloads = pickle.loads(f.read())
        moved = {(k[0], (k[1][0], "other-cpu", k[1][2]), *k[2:]): v for k, v in overloads.items()}
        with open(index, "wb") as f:
            pickle.dump(version, f, protocol=-1)
            f.write(pickle.dumps((stamp, moved), protocol=-1))
    text, fallback = _run_ready(broker, tmp_path, cache, _model(tmp_path))
    lines = [ln for ln in text.splitlines() if "were built for CPU other-cpu" in ln]
    assert len(lines) == 1, text[-3000:]
    assert "compiling them again" in lines[0]
    assert "no locator available" not in text and "Traceback" not in text
    detect = next(fallback.rglob("detect._detect_batch-*.nbi"))
    with open(detect, "rb") as f:
        pickle.load(f)
        _, overloads = pickle.loads(f.read())
    assert {k[1][1] for k in overloads} - {"other-cpu"}, "not compiled for this CPU"
