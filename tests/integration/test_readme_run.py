"""The README's "Run it for real" block, run as written on a fresh copy of config/: a
model from the demo fleet's history, a config check, a local broker where the config
points, `streamlstm run` scoring, `alerts` against it, `inspect` of its checkpoint.

The commands are read from the README, not copied here, so an edit there is what runs.
Only two things differ, both outside the commands' meaning: the fixed ports (the broker's
localhost:9092 and the metrics port 10131, in the commands and the copied config) become
free ones, so parallel runs do not collide; and the sizes of the history and the model
are made small (SHORTER), so the walk takes seconds."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from streamlstm.service.config.types import DEFAULT_METRICS_PORT
from tests import documented
from tests.integration.test_daemon import _free_port

SHORTER = {
    ("demo", "--save-history"): ["--streams", "4", "--steps", "400"],
    ("train",): ["--hidden", "4", "--epochs", "1", "--quiet"],
    ("demo", "--broker"): ["--streams", "4", "--rate", "400"],
}


def _argv(cmd: str) -> list[str]:
    words = shlex.split(cmd.removesuffix("&"))
    assert words[0] == "streamlstm", cmd
    for key, extra in SHORTER.items():
        if tuple(w for w in words[1:] if w in key) == key:
            words += extra
    return [sys.executable, "-m", "streamlstm", *words[1:]]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _scored(url: str) -> float:
    total = 0.0
    for line in _get(f"{url}/metrics")[1].splitlines():
        if line.startswith("streamlstm_events_total{") and 'outcome="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(cond, what: str, procs: list[subprocess.Popen[bytes]], timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args} exited {p.returncode} waiting for {what}"
        if cond():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_readme_path_from_a_fresh_clone_to_a_scoring_daemon(tmp_path: Path) -> None:
    readme = (documented.ROOT / "README.md").read_text()
    block = documented.block_after(readme, "## Run it for real")
    kafka, metrics = _free_port(), _free_port()
    ports = {"localhost:9092": f"localhost:{kafka}", str(DEFAULT_METRICS_PORT): str(metrics)}

    def local(text: str) -> str:
        for old, new in ports.items():
            text = text.replace(old, new)
        return text

    skip = shutil.ignore_patterns("models", "checkpoints")
    shutil.copytree(documented.ROOT / "config", tmp_path / "config", ignore=skip)
    cfg = tmp_path / "config" / "pipeline.yaml"
    cfg.write_text(local(cfg.read_text()))
    url = f"http://127.0.0.1:{metrics}"
    ckpts = tmp_path / "config" / "checkpoints" / "sensors"  # the config's default dir
    logs = tmp_path / "logs"
    logs.mkdir()
    background: list[subprocess.Popen[bytes]] = []
    ran: list[str] = []
    try:
        for cmd in block:
            argv = _argv(local(cmd))
            sub = cmd.split()[1]
            if cmd.endswith("&") or sub == "run":
                out = open(logs / f"{len(ran)}-{sub}.log", "wb")  # noqa: SIM115 - closed with the dir
                background.append(
                    subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
                )
                if sub == "demo":  # the broker answers once the topics exist
                    _wait(lambda: "streaming" in (logs / f"{len(ran)}-demo.log").read_text(),
                          "the local broker", background)  # fmt: skip
                else:  # the daemon: ready, scoring, and a checkpoint written
                    _wait(lambda: _get(f"{url}/readyz")[0] == 200, "/readyz", background)
                    _wait(lambda: _scored(url) > 0, "scored events", background)
                    _wait(lambda: any(ckpts.glob("*")), "a checkpoint", background)
            else:
                res = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                     timeout=300)  # fmt: skip
                assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
                if sub == "alerts":
                    assert "pipeline" in res.stdout or "no stream" in res.stdout, res.stdout
                if sub == "inspect":
                    assert "sensor-readings" in res.stdout and "sensor-" in res.stdout
            ran.append(sub)
        assert ran == ["demo", "train", "check-config", "demo", "run", "alerts", "inspect"], ran
        argv = _argv(local(f"streamlstm alerts --url {url} --json"))
        alerts = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert isinstance(json.loads(alerts.stdout), (list, dict)), alerts.stdout
    finally:
        codes = []
        for p in reversed(background):  # the daemon first, then the broker
            p.send_signal(signal.SIGINT)
            try:
                codes.append(p.wait(60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(None)
    assert codes == [0, 0], (codes, {f.name: f.read_text()[-1500:] for f in logs.iterdir()})
