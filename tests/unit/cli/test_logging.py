"""Logging: our flags before or after the subcommand, kafka-python quiet by default,
JSON lines on request, secrets redacted whatever the level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from streamlstm import cli


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_streamlstm", False)]:
        root.removeHandler(h)
    logging.getLogger("kafka").setLevel(logging.NOTSET)
    logging.getLogger("numba").setLevel(logging.NOTSET)
    logging.getLogger("streamlstm.kafka").setLevel(logging.NOTSET)


def test_flags_work_before_and_after_the_subcommand() -> None:
    p = cli.build_parser()
    a = p.parse_args(["--log-level", "DEBUG", "check-config", "x.yaml"])
    assert (a.log_level, a.kafka_log_level, a.log_format) == ("DEBUG", "WARNING", "text")
    b = p.parse_args(["check-config", "x.yaml", "--log-level", "ERROR", "--log-format", "json"])
    assert (b.log_level, b.log_format) == ("ERROR", "json")


def test_kafka_python_info_is_quiet_and_ours_is_not(captured: io.StringIO) -> None:
    cli.configure_logging("INFO", "WARNING", "text", captured)
    logging.getLogger("kafka.conn").info("connecting to node 1")
    logging.getLogger("kafka.conn").warning("node 1 unreachable")
    logging.getLogger("streamlstm.service.loop").info("partition 0 assigned")
    out = captured.getvalue()
    assert "connecting to node 1" not in out
    assert "node 1 unreachable" in out and "partition 0 assigned" in out


def test_client_errors_are_one_line_unless_the_client_is_at_debug(
    captured: io.StringIO,
) -> None:
    def lost(name: str) -> None:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            logging.getLogger(name).exception("Error sending request data")

    cli.configure_logging("INFO", "WARNING", "text", captured)
    lost("kafka.net.transport")
    lost("streamlstm.service.loop")  # ours keep their tracebacks
    out = captured.getvalue()
    assert "Error sending request data" in out and out.count("Traceback") == 1
    assert "streamlstm.service.loop" in out.split("Traceback")[0]
    captured.truncate(0)
    cli.configure_logging("INFO", "DEBUG", "text", captured)
    lost("kafka.net.transport")
    assert "Traceback" in captured.getvalue()


def test_json_lines_and_secrets_redacted_even_at_debug(captured: io.StringIO) -> None:
    cli.configure_logging("DEBUG", "DEBUG", "json", captured)
    logging.getLogger("kafka.protocol").debug(
        "Sending request %s", "SaslAuthenticateRequest(auth_bytes=b'svc\\x00svc\\x00s3cr3t-pw')"
    )
    logging.getLogger("streamlstm.x").debug("sasl_plain_password='s3cr3t-pw' given")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [d["logger"] for d in lines] == ["kafka.protocol", "streamlstm.x"]
    assert all(set(d) >= {"ts", "level", "logger", "message"} for d in lines)
    assert "s3cr3t-pw" not in captured.getvalue()
    assert "auth_bytes=<redacted>" in lines[0]["message"]


def test_levels_per_logger_and_numba_quiet_at_debug(captured: io.StringIO) -> None:
    p = cli.build_parser()
    a = p.parse_args(["run", "--log-level", "DEBUG", "--log-levels", "streamlstm.kafka=warning"])
    assert a.log_levels == {"streamlstm.kafka": "WARNING"}
    cli.configure_logging("DEBUG", "WARNING", "text", captured, per_logger=a.log_levels)
    logging.getLogger("numba.core.ssa").debug("on stmt: $x = global(...)")
    logging.getLogger("streamlstm.kafka.sink").info("flushed 3 records")
    logging.getLogger("streamlstm.service.loop").debug("checkpoint of 2 partitions")
    out = captured.getvalue()
    assert "on stmt" not in out and "flushed" not in out
    assert "checkpoint of 2 partitions" in out


def test_a_bad_per_logger_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["run", "--log-levels", "kafka=LOUD"])
    assert exc.value.code == 2
    assert "expected LOGGER=LEVEL" in capsys.readouterr().err
