"""streamlstm.service.config: defaults, YAML paths in every error, secrets, several pipelines."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlstm.detector import DetectorConfig
from streamlstm.errors import ConfigError
from streamlstm.io.features import FeatureSpec
from streamlstm.service import config as C
from streamlstm.service.config import (
    ConfigErrors,
    KafkaConfig,
    ServiceConfig,
    load_config,
    parse_config,
)
from streamlstm.service.config.yamlread import Loader

REPO = Path(__file__).resolve().parents[3]


def minimal() -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": ["localhost:9092"]},
        "pipelines": [
            {
                "name": "sensors",
                "source": {"topics": ["readings"]},
                "decode": {"key_field": "sensor", "time_field": "ts", "features": ["temp"]},
                "model": {"path": "models/sensors.npz"},
            }
        ],
    }


def parse(data: dict[str, Any], env: dict[str, str] | None = None, **kw: Any) -> ServiceConfig:
    return parse_config(data, source="test.yaml", base_dir=Path("/cfg"), env=env or {}, **kw)


def errors_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse(data, env)
    assert isinstance(ei.value, ConfigErrors)
    return ei.value.messages


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default: minimal()) with the dotted ``path`` set to ``value``."""
    data = copy.deepcopy(base or minimal())
    node: Any = data
    parts = path.split(".")
    for p in parts[:-1]:
        m = re.fullmatch(r"(\w+)\[(\d+)\]", p)
        if m:
            node = node[m.group(1)][int(m.group(2))]
        else:
            node = node.setdefault(p, {})
    node[parts[-1]] = value
    return data


# -- defaults -------------------------------------------------------------------------------
def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse(minimal())
    assert cfg.source == "test.yaml"
    assert (cfg.shutdown_grace_s, cfg.heartbeat_stale_s) == (20.0, 30.0)
    assert cfg.metrics == C.MetricsConfig("0.0.0.0", 10131, 100)
    (p,) = cfg.pipelines
    assert p.name == "sensors" and p.path == "pipelines[0]"
    k = p.kafka
    assert k.bootstrap_servers == ("localhost:9092",)
    assert (k.client_id, k.group_id, k.assignment, k.partitions) == (
        "streamlstm",
        "streamlstm-sensors",  # one consumer group per pipeline
        "group",
        None,
    )
    assert (k.security_protocol, k.sasl_mechanism, k.sasl_password) == ("PLAINTEXT", None, None)
    assert (k.session_timeout_ms, k.heartbeat_interval_ms, k.max_poll_interval_ms) == (
        10000,
        3000,
        300000,
    )
    assert p.source == C.SourceConfig(("readings",), 2000, 100, "earliest")
    assert p.decode.time_unit == "s" and p.decode.max_value == 1e12
    assert p.decode.features == (FeatureSpec("temp", field="temp"),)
    assert p.model_path == Path("/cfg/models/sensors.npz")  # relative to the YAML's directory
    assert p.detector == DetectorConfig()
    assert p.sinks == C.SinksConfig("streamlstm-alerts", "streamlstm-dead-letter", True)
    assert p.checkpoint == C.CheckpointConfig(
        Path("/cfg/checkpoints/sensors"), 10.0, 2, topic="sensors-state"
    )
    assert p.checkpoint.store == "local" and p.checkpoint.chunk_bytes == 512 * 1024
    assert p.feature_names == ("temp",)


def test_detector_sections_cover_every_detector_field_once() -> None:
    listed = [n for names in C.DETECTOR_SECTIONS.values() for n in names]
    assert sorted(listed) == sorted(DetectorConfig.field_names())


def test_detector_sections_map_onto_detector_config() -> None:
    data = minimal()
    data["pipelines"][0].update(
        scoring={"stream_scale": False, "smooth": 5, "max_abs": 50},
        alerts={"open_threshold": 0.99, "close_threshold": 0.9, "min_run": 2, "cooldown_s": 60},
        state={"max_streams": 1000, "idle_ttl_s": 3600, "reset_gap_s": 600},
    )
    det = parse(data).pipelines[0].detector
    assert det == DetectorConfig(
        stream_scale=False,
        smooth=5,
        max_abs=50.0,
        open_threshold=0.99,
        close_threshold=0.9,
        min_run=2,
        cooldown_s=60.0,
        max_streams=1000,
        idle_ttl_s=3600.0,
        reset_gap_s=600.0,
    )


def test_consumer_and_producer_kwargs() -> None:
    data = with_("kafka.extra", {"fetch_max_bytes": 1024, "linger_ms": 5})
    data = with_("pipelines[0].source.max_poll_records", 500, data)
    p = parse(data).pipelines[0]
    ck = p.kafka.consumer_kwargs()
    assert ck["bootstrap_servers"] == ["localhost:9092"]
    assert ck["group_id"] == "streamlstm-sensors"
    assert ck["enable_auto_commit"] is False  # offsets only after a durable checkpoint
    assert ck["fetch_max_bytes"] == 1024 and "linger_ms" not in ck
    pk = p.kafka.producer_kwargs()
    assert pk["linger_ms"] == 5 and "fetch_max_bytes" not in pk and "group_id" not in pk
    from kafka import KafkaConsumer, KafkaProducer

    assert set(ck) <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert set(pk) <= set(KafkaProducer.DEFAULT_CONFIG)


# -- an error in every section names its YAML path --------------------------------------------
P = "pipelines[0]"
SECTION_ERRORS = [
    # (section, dotted path to set, bad value, expected message start, piece of the message)
    ("kafka", "kafka.session_timeout_ms", "10s", "kafka.session_timeout_ms", "'10s'"),
    ("kafka", f"{P}.kafka.bootstrap_servers", ["nohostport"],
     f"{P}.kafka.bootstrap_servers[0]", "host:port"),
    ("source", f"{P}.source.start", "beginning", f"{P}.source.start", "earliest, latest"),
    ("source", f"{P}.source.topics", ["bad topic!"], f"{P}.source.topics[0]", "topic name"),
    ("decode", f"{P}.decode.time_unit", "min", f"{P}.decode.time_unit", "s, ms, us, ns, iso"),
    ("decode", f"{P}.decode.max_value", -1, f"{P}.decode.max_value", "> 0"),
    ("features", f"{P}.decode.features", ["temp", {"name": "x", "transform": "logg"}],
     f"{P}.decode.features[1].transform", "'logg' is not one of none, log, onehot"),
    ("features", f"{P}.decode.features", [{"name": "c", "transform": "hash", "buckets": 1}],
     f"{P}.decode.features[0].buckets", "2..4096"),
    ("features", f"{P}.decode.features", ["temp", "temp"],
     f"{P}.decode.features[1].name", "already used"),
    ("model", f"{P}.model", {}, f"{P}.model.path", "missing"),
    ("model", f"{P}.model.path", 3, f"{P}.model.path", "3 (an integer)"),
    ("scoring", f"{P}.scoring.smooth", 0, f"{P}.scoring.smooth", ">= 1"),
    ("scoring", f"{P}.scoring.stream_scale", "yes", f"{P}.scoring.stream_scale", "true or false"),
    ("alerts", f"{P}.alerts.open_threshold", 1.5, f"{P}.alerts.open_threshold", "(0, 1)"),
    ("alerts", f"{P}.alerts", {"open_threshold": 0.9, "close_threshold": 0.95},
     f"{P}.alerts.close_threshold", "hysteresis"),
    ("state", f"{P}.state.max_streams", 0, f"{P}.state.max_streams", ">= 1"),
    ("state", f"{P}.state.idle_ttl_s", "1h", f"{P}.state.idle_ttl_s", "a number"),
    ("sinks", f"{P}.sinks.alerts_topic", "readings", f"{P}.sinks.alerts_topic", "source topic"),
    ("sinks", f"{P}.sinks.log_alerts", 1, f"{P}.sinks.log_alerts", "true or false"),
    ("checkpoint", f"{P}.checkpoint.interval_s", 0, f"{P}.checkpoint.interval_s", "> 0"),
    ("checkpoint", f"{P}.checkpoint.keep", 0, f"{P}.checkpoint.keep", "1..100"),
    ("checkpoint", f"{P}.checkpoint.store", "s3", f"{P}.checkpoint.store", "local"),
    ("checkpoint", f"{P}.checkpoint.topic", "a b", f"{P}.checkpoint.topic", "topic name"),
    ("checkpoint", f"{P}.checkpoint.chunk_bytes", 2_000_000, f"{P}.checkpoint.chunk_bytes",
     "1024..1000000"),
    ("checkpoint", f"{P}.checkpoint.full_every", 3, f"{P}.checkpoint.full_every",
     "needs store: kafka"),
    ("checkpoint", f"{P}.checkpoint.full_every", 0, f"{P}.checkpoint.full_every", "1..1000"),
    ("metrics", "metrics.port", 70000, "metrics.port", "0..65535"),
    ("service", "service.shutdown_grace_s", -1, "service.shutdown_grace_s", "> 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("section", "path", "value", "yaml_path", "piece"),
    SECTION_ERRORS,
    ids=[f"{s[0]}:{s[1]}" for s in SECTION_ERRORS],
)
def test_error_in_every_section_names_its_yaml_path(
    section: str, path: str, value: Any, yaml_path: str, piece: str
) -> None:
    (msg,) = errors_of(with_(path, value))
    assert msg.startswith(f"test.yaml: {yaml_path}: "), msg
    assert piece in msg


def test_all_sections_are_covered_by_the_error_table() -> None:
    assert {s[0] for s in SECTION_ERRORS} >= {
        "kafka", "source", "decode", "features", "model", "scoring", "alerts", "state",
        "sinks", "checkpoint", "metrics",
    }  # fmt: skip


def test_errors_of_independent_sections_are_all_reported() -> None:
    data = with_("metrics.port", -1)
    data = with_(f"{P}.source.start", "now", data)
    data = with_(f"{P}.alerts.min_run", 0, data)
    msgs = errors_of(data)
    assert [m.split(": ")[1] for m in msgs] == [
        "metrics.port",
        f"{P}.source.start",
        f"{P}.alerts.min_run",
    ]


def test_unknown_keys_are_rejected_with_a_did_you_mean_hint() -> None:
    (msg,) = errors_of(with_(f"{P}.source.topicz", ["x"]))
    assert msg.startswith(
        f"test.yaml: {P}.source.topicz: unknown key 'topicz'; did you mean 'topics'?"
    )
    (msg,) = errors_of(with_(f"{P}.alerts.cooldown", 60))
    assert "did you mean 'cooldown_s'?" in msg
    (msg,) = errors_of(with_("metrcs", {}))
    assert msg.startswith("test.yaml: metrcs: unknown key") and "'metrics'" in msg
    (msg,) = errors_of(with_("kafka.extra", {"fetch_max_byte": 1}))
    assert "kafka.extra.fetch_max_byte" in msg and "did you mean 'fetch_max_bytes'?" in msg
    (msg,) = errors_of(with_(f"{P}.decode.features", [{"name": "t", "feild": "x"}]))
    assert f"{P}.decode.features[0].feild" in msg and "did you mean 'field'?" in msg
    (msg,) = errors_of(with_(f"{P}.decode.features", [{"name": "t", "transform": "onehott"}]))
    assert "did you mean 'onehot'?" in msg


def test_shared_kafka_is_overridden_per_key_and_errors_point_at_the_source() -> None:
    data = with_("kafka.client_id", "shared")
    data = with_(f"{P}.kafka.group_id", "own-group", data)
    k = parse(data).pipelines[0].kafka
    assert (k.client_id, k.group_id, k.bootstrap_servers) == (
        "shared",
        "own-group",
        ("localhost:9092",),
    )
    (msg,) = errors_of(with_(f"{P}.kafka.assignment", "manual", data))
    assert msg.startswith(f"test.yaml: {P}.kafka.assignment: ")
    (msg,) = errors_of(with_("kafka.assignment", "manual", data))
    assert msg.startswith("test.yaml: kafka.assignment: ")


def test_static_assignment_and_partitions() -> None:
    data = with_("kafka.assignment", "static")
    data = with_("kafka.partitions", [0, 2], data)
    assert parse(data).pipelines[0].kafka.partitions == (0, 2)
    (msg,) = errors_of(with_("kafka.partitions", [0]))
    assert "assignment: static" in msg
    (msg,) = errors_of(with_("kafka.partitions", [0, -1], with_("kafka.assignment", "static")))
    assert msg.startswith("test.yaml: kafka.partitions[1]: ")


def test_group_instance_id_from_the_environment_makes_a_static_member() -> None:
    data = with_("kafka.group_instance_id", "${POD_NAME}")
    k = parse(data, env={"POD_NAME": "streamlstm-1"}).pipelines[0].kafka
    assert k.group_instance_id == "streamlstm-1"
    assert k.consumer_kwargs()["group_instance_id"] == "streamlstm-1"
    assert "group_instance_id" not in parse(minimal()).pipelines[0].kafka.consumer_kwargs()
    (msg,) = errors_of(data, env={})
    assert msg.startswith("test.yaml: kafka.group_instance_id: ") and "POD_NAME" in msg
    (msg,) = errors_of(with_("kafka.assignment", "static", data), env={"POD_NAME": "p-0"})
    assert msg.startswith("test.yaml: kafka.group_instance_id: ") and "assignment: group" in msg
    for bad in ("pod/0", "..", "x" * 250):
        (msg,) = errors_of(with_("kafka.group_instance_id", bad))
        assert msg.startswith("test.yaml: kafka.group_instance_id: "), msg


def test_heartbeat_must_be_below_session_timeout() -> None:
    (msg,) = errors_of(with_("kafka.heartbeat_interval_ms", 10000))
    assert (
        msg.startswith("test.yaml: kafka.heartbeat_interval_ms: ") and "session_timeout_ms" in msg
    )


def test_request_timeout_between_fetch_wait_and_idle_timeout() -> None:
    data = with_("kafka.extra", {"fetch_max_wait_ms": 40000})
    (msg,) = errors_of(data)
    assert msg.startswith("test.yaml: kafka.request_timeout_ms: 30000 is not between")
    data = with_(f"{P}.kafka.request_timeout_ms", 45000, data)
    assert parse(data).pipelines[0].kafka.consumer_kwargs()["request_timeout_ms"] == 45000


def test_missing_sections_are_errors_with_paths() -> None:
    data = minimal()
    del data["pipelines"][0]["source"]
    del data["pipelines"][0]["decode"]
    msgs = errors_of(data)
    assert [m.split(": ")[1] for m in msgs] == [f"{P}.source.topics", f"{P}.decode.features"]
    assert any("missing" in m for m in msgs)
    (msg,) = errors_of({"kafka": {"bootstrap_servers": ["h:1"]}})
    assert msg.startswith("test.yaml: pipelines: missing")


# -- secrets ----------------------------------------------------------------------------------
def sasl(**kafka: Any) -> dict[str, Any]:
    data = minimal()
    data["kafka"].update(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="svc", **kafka)  # fmt: skip
    return data


def test_secret_from_environment_is_masked_in_repr() -> None:
    cfg = parse(sasl(sasl_password_env="KAFKA_PW"), env={"KAFKA_PW": "hunter2"})
    k = cfg.pipelines[0].kafka
    assert k.sasl_password == "hunter2"
    assert "hunter2" not in repr(k) and "hunter2" not in repr(cfg) and "***" in repr(k)
    kw = k.consumer_kwargs()
    assert kw["sasl_plain_password"] == "hunter2" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc" and kw["security_protocol"] == "SASL_SSL"


def test_secret_from_file_relative_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("s3cret\n")
    cfg = parse_config(
        sasl(sasl_password_file="pw.txt"), source="t.yaml", base_dir=tmp_path, env={}
    )
    assert cfg.pipelines[0].kafka.sasl_password == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_secret_errors() -> None:
    (msg,) = errors_of(sasl(sasl_password="inline"))
    assert msg.startswith("test.yaml: kafka.sasl_password: secrets are not read from the YAML")
    assert "inline" not in msg
    (msg,) = errors_of(sasl(sasl_password_env="NOPE"), env={})
    assert msg.startswith("test.yaml: kafka.sasl_password_env: ") and "NOPE is not set" in msg
    (msg,) = errors_of(sasl(sasl_password_file="/no/such/file"))
    assert msg.startswith("test.yaml: kafka.sasl_password_file: cannot read /no/such/file")
    (msg,) = errors_of(sasl())
    assert msg.startswith("test.yaml: kafka.sasl_password_env: missing")
    (msg,) = errors_of(sasl(sasl_password_env="A", sasl_password_file="b"), env={"A": "x"})
    assert "not both" in msg
    (msg,) = errors_of(with_("kafka.extra", {"sasl_plain_password": "x"}))
    assert msg.startswith("test.yaml: kafka.extra.sasl_plain_password: ")
    (msg,) = errors_of(with_("kafka.sasl_username", "u"))  # SASL settings under PLAINTEXT
    assert msg.startswith("test.yaml: kafka.sasl_username: ") and "PLAINTEXT" in msg


def test_nothing_reads_the_real_environment_when_env_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_PW", "from-os")
    (msg,) = errors_of(sasl(sasl_password_env="KAFKA_PW"), env={})
    assert "KAFKA_PW is not set" in msg


# -- several pipelines, YAML files -------------------------------------------------------------
def test_several_pipelines_in_one_file() -> None:
    data = minimal()
    second = copy.deepcopy(data["pipelines"][0])
    second.update(name="cards", source={"topics": ["tx"]}, model={"path": "/abs/cards.npz"})
    data["pipelines"].append(second)
    cfg = parse(data)
    assert [p.name for p in cfg.pipelines] == ["sensors", "cards"]
    assert [p.index for p in cfg.pipelines] == [0, 1]
    assert cfg.pipeline("cards").model_path == Path("/abs/cards.npz")
    assert cfg.pipelines[1].kafka.group_id == "streamlstm-cards"
    assert cfg.pipelines[0].checkpoint.dir != cfg.pipelines[1].checkpoint.dir
    (msg,) = errors_of(with_("pipelines[1].name", "sensors", data))
    assert msg.startswith("test.yaml: pipelines[1].name: ") and "pipelines[0]" in msg
    same_dir = with_("pipelines[1].checkpoint.dir", "checkpoints/sensors", data)
    (msg,) = errors_of(same_dir)
    assert msg.startswith("test.yaml: pipelines[1].checkpoint.dir: ")
    kafka_store = with_("pipelines[0].checkpoint", {"store": "kafka", "topic": "st"}, data)
    kafka_store = with_("pipelines[1].checkpoint", {"store": "kafka", "topic": "st"}, kafka_store)
    (msg,) = errors_of(kafka_store)
    assert msg.startswith("test.yaml: pipelines[1].checkpoint.topic: ") and "'st'" in msg
    bad_second = with_("pipelines[1].source.start", "now", data)
    (msg,) = errors_of(bad_second)
    assert msg.startswith("test.yaml: pipelines[1].source.start: ")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "svc.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_load_config_resolves_paths_against_the_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
        kafka: {bootstrap_servers: "b1:9092, b2:9093"}
        pipelines:
          - name: s
            source: {topics: readings}
            decode:
              max_value: 1e9
              features: [temp]
            model: {path: models/m.npz}
            checkpoint: {dir: state/s}
        """,
    )
    cfg = load_config(p, env={})
    pl = cfg.pipelines[0]
    assert cfg.source == str(p)
    assert pl.kafka.bootstrap_servers == ("b1:9092", "b2:9093")
    assert pl.source.topics == ("readings",)
    assert pl.decode.max_value == 1e9  # YAML 1.1 would have read "1e9" as a string
    assert pl.model_path == tmp_path / "models/m.npz"
    assert pl.checkpoint.dir == tmp_path / "state/s"


def test_yaml_problems_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"svc.yaml: line 3, column \d+: invalid YAML"):
        load_config(write(tmp_path, "kafka:\n  a: [1\n  b: 2\n"))
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_config(write(tmp_path, "metrics:\n  port: 1\n  port: 2\npipelines: []\n"))
    with pytest.raises(ConfigError, match="svc.yaml: the file is empty"):
        load_config(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(
        ConfigError, match=r"svc.yaml: found \[1, 2\] \(a list\), expected a mapping"
    ):
        load_config(write(tmp_path, "[1, 2]\n"))


def test_norway_problem_in_vocabulary_is_explained(tmp_path: Path) -> None:
    data = with_(
        f"{P}.decode.features", [{"name": "c", "transform": "onehot", "vocabulary": ["SE", False]}]
    )
    (msg,) = errors_of(data)
    assert msg.startswith(f"test.yaml: {P}.decode.features[0].vocabulary[1]: ") and "quote" in msg


@pytest.mark.parametrize("name", ["pipeline.yaml", "sensors.yaml", "transactions.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "config" / name, env={})
    for p in cfg.pipelines:
        assert p.model_path.is_relative_to(REPO / "config")
        assert len(p.feature_names) >= 1


def test_pipeline_yaml_documents_the_real_defaults() -> None:
    """Every option of config/pipeline.yaml is shown with its default: keep them true."""
    text = (REPO / "config" / "pipeline.yaml").read_text()
    d = DetectorConfig()
    documented = {}
    for m in re.finditer(r"^\s*#?\s*(\w+): (\S+)(?:\s+#\s*default (\S+?);?)?\s", text, re.M):
        key, value, default = m.groups()
        documented.setdefault(key, default or value)
    parsed = {k: Loader(v).get_single_data() for k, v in documented.items()}
    for name in DetectorConfig.field_names():
        assert name in parsed, f"pipeline.yaml does not document {name}"
        assert parsed[name] == getattr(d, name), name
    assert parsed["port"] == C.MetricsConfig().port
    assert parsed["max_alert_series"] == C.MetricsConfig().max_alert_series
    for k in ("max_poll_records", "poll_timeout_ms", "start"):
        assert parsed[k] == getattr(C.SourceConfig(topics=()), k)
    for k in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms"):
        assert parsed[k] == getattr(KafkaConfig(bootstrap_servers=()), k)
    assert parsed["interval_s"] == 10.0 and parsed["keep"] == 2


# -- feature roles ----------------------------------------------------------------------------
def test_feature_roles_context_only_inputs_are_not_scored() -> None:
    from streamlstm.model import Model

    feats = [
        "temp",
        {"name": "cmd", "role": "context"},
        {"name": "hour", "transform": "time_of_day"},
        {"name": "mode", "transform": "onehot", "vocabulary": ["a"], "role": "scored"},
    ]
    (p,) = parse(with_("pipelines[0].decode.features", feats)).pipelines
    assert [s.role for s in p.decode.features] == ["auto", "context", "auto", "scored"]
    model = Model.random(list(p.feature_names), hidden=4)
    m = p.roles_for(model)
    assert m.context == ("cmd", "hour_sin", "hour_cos")
    assert m.scored_mask().tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    # a feature the model file names as context stays context unless the YAML says scored
    both = p.roles_for(model.with_context(["temp"]))
    assert both.context == ("temp", "cmd", "hour_sin", "hour_cos")


def test_bad_feature_role_names_its_yaml_path() -> None:
    msgs = errors_of(with_("pipelines[0].decode.features", [{"name": "t", "role": "input"}]))
    assert any("pipelines[0].decode.features[0].role" in m and "context" in m for m in msgs), msgs


# -- ${ENV} in values -------------------------------------------------------------------------
def test_env_references_fill_values_with_their_yaml_type() -> None:
    data = with_("pipelines[0].kafka", {"client_id": "streamlstm-${POD_NAME}"})
    data["metrics"] = {"port": "${METRICS_PORT:-10131}"}
    data["kafka"]["bootstrap_servers"] = ["${KAFKA:-localhost:9092}"]
    cfg = parse(data, env={"POD_NAME": "streamlstm-1", "METRICS_PORT": "9200"})
    assert cfg.pipelines[0].kafka.client_id == "streamlstm-streamlstm-1"
    assert cfg.metrics.port == 9200
    assert cfg.pipelines[0].kafka.bootstrap_servers == ("localhost:9092",)


def test_unset_env_reference_names_the_yaml_path() -> None:
    msgs = errors_of(with_("pipelines[0].kafka", {"client_id": "${POD_NAME}"}))
    assert msgs == [
        "test.yaml: pipelines[0].kafka.client_id: ${POD_NAME} is not set in the "
        "environment (give a default: ${POD_NAME:-value})"
    ]


def test_extra_values_kafka_python_cannot_take_are_refused_with_their_path() -> None:
    for value, want in (
        ({"partition_assignment_strategy": "sticky"}, "takes Python objects"),
        ({"fetch_max_wait_ms": "10"}, "expected an integer"),
        ({"check_crcs": "yes"}, "expected true or false"),
    ):
        msgs = errors_of(with_("kafka.extra", value))
        key = next(iter(value))
        assert any(f"kafka.extra.{key}" in m and want in m for m in msgs), msgs
    cfg = parse(with_("kafka.extra", {"fetch_max_wait_ms": 10, "client_rack": "r1"}))
    assert cfg.pipelines[0].kafka.extra["fetch_max_wait_ms"] == 10


def test_fetches_wait_briefly_by_default_and_extra_overrides_it():
    # kafka-python parks a fetch up to 500 ms by default: an event arriving meanwhile
    # waited that long to be scored (produce -> alert p99 463 ms at 10k events/s)
    from streamlstm.kafka.config import FETCH_MAX_WAIT_MS

    kw = parse(with_("kafka.extra", None)).pipelines[0].kafka.consumer_kwargs()
    assert kw["fetch_max_wait_ms"] == FETCH_MAX_WAIT_MS <= 50
    cfg = parse(with_("kafka.extra", {"fetch_max_wait_ms": 200}))
    assert cfg.pipelines[0].kafka.consumer_kwargs()["fetch_max_wait_ms"] == 200


# -- the consumer's client ------------------------------------------------------------------
def test_client_defaults_to_kafka_python_and_confluent_is_chosen_by_name() -> None:
    assert parse(minimal()).pipelines[0].kafka.client == "kafka-python"
    assert parse(with_("kafka.client", "confluent")).pipelines[0].kafka.client == "confluent"
    (msg,) = errors_of(with_("kafka.client", "librdkafka"))
    assert msg.startswith("test.yaml: kafka.client: ") and "kafka-python, confluent" in msg


def test_confluent_refuses_a_consumer_setting_it_cannot_map() -> None:
    data = with_("kafka.client", "confluent")
    data["kafka"]["extra"] = {"fetch_max_wait_ms": 20, "exclude_internal_topics": False}
    (msg,) = errors_of(data)
    assert msg.startswith("test.yaml: kafka.extra.exclude_internal_topics: "), msg
    assert "client: confluent" in msg
    # kafka-python takes it as before
    data["kafka"]["client"] = "kafka-python"
    assert parse(data).pipelines[0].kafka.extra["exclude_internal_topics"] is False


def test_confluent_without_the_package_names_the_yaml_path(tmp_path: Path) -> None:
    """A real missing package: the import is blocked in a fresh interpreter."""
    cfg = tmp_path / "c.yaml"
    data = with_(f"{P}.kafka.client", "confluent")
    cfg.write_text(yaml.safe_dump(data))
    code = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "from streamlstm.service.config import load_config\n"
        f"load_config({str(cfg)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"{P}.kafka.client: confluent needs the confluent-kafka package" in proc.stderr
    assert "pip install 'streamlstm[confluent]'" in proc.stderr
