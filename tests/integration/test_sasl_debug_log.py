"""No secret in any log line at any level: `streamlstm run` at DEBUG (ours and
kafka-python's) with SASL PLAIN set, the password from an environment variable and from
a file, against the real local broker, until the client has sent its SASL requests
(logged at DEBUG). The password is in no line.

The local broker offers no SASL PLAIN, so the client never sends PLAIN's auth bytes
(``user\\0user\\0password``); their redaction is tested on kafka-python's own request
text in tests/unit/cli/test_logging.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamlstm.cli.demo import persistence_model
from tests.integration.test_daemon import _config

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-Pw-4711"


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_debug_run_with_sasl_logs_no_password(broker: Any, tmp_path: Path, source: str) -> None:
    model = persistence_model(np.random.default_rng(2).normal(size=(2, 200, 4)))
    cfg = _config(tmp_path, broker.bootstrap, model.save(tmp_path / "m.npz"), "ev", "sasl", 0)
    doc = yaml.safe_load(cfg.read_text())
    doc["kafka"].update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                        sasl_username="svc")  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if source == "env":
        doc["kafka"]["sasl_password_env"] = "KAFKA_PASSWORD"
        env["KAFKA_PASSWORD"] = SECRET
    else:
        (tmp_path / "kafka-password").write_text(SECRET + "\n")
        doc["kafka"]["sasl_password_file"] = str(tmp_path / "kafka-password")
    cfg.write_text(yaml.safe_dump(doc))
    log = tmp_path / "debug.log"
    argv = [sys.executable, "-m", "streamlstm", "run", "--config", str(cfg), "--metrics-port",
            "0", "--log-level", "DEBUG", "--kafka-log-level", "DEBUG"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "SaslHandshakeRequest" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
            time.sleep(1.0)  # a retry or two more at DEBUG
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    text = log.read_text(errors="replace")
    assert " DEBUG kafka." in text  # the client really at DEBUG
    assert "mechanism='PLAIN'" in text
    assert SECRET not in text
